"""Answer accuracy for math word problems: an `evaluate` metric built on `mathgenie.answers`.

    import evaluate
    from mathgenie.evaluation import METRIC_PATH
    metric = evaluate.load(METRIC_PATH)          # or evaluate.load("path/to/answer_accuracy")
    metric.compute(predictions=["... so the answer is $\\boxed{\\frac12}$.", "7"], references=["0.5", "8"])
    # {'accuracy': 0.5, 'correct': 1, 'total': 2, 'no_answer': 0}
"""

from __future__ import annotations

import datasets
import evaluate

from mathgenie.answers import check_batch, extract_answer
from mathgenie.cards.common import CITATIONS

_CITATION = CITATIONS["MathGenie"]

_DESCRIPTION = """\
Share of predictions whose final answer equals the reference answer. The final answer of a prediction is its last
\\boxed{...}, "The answer is: ...", or "#### ..." (mathgenie.answers.extract_answer); a prediction with none of these
is taken as the answer itself. Equality is mathgenie.answers.check_batch: exact and numeric fast paths
(0.5 == \\frac{1}{2} == 1/2, 1,000 == 1000, x=4 == 4), then math-verify with a per-pair deadline.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model outputs or final answers.
    references (list of str): reference final answers (not full solutions).
    extract (bool, default True): extract the final answer from each prediction first.
    timeout (float, default 5.0): seconds math-verify may spend on one pair (it then counts as wrong).
Returns:
    accuracy (float): correct / total.
    correct (int), total (int), no_answer (int): predictions with no answer found (empty text).
Examples:
    >>> metric = evaluate.load("answer_accuracy")
    >>> metric.compute(predictions=["The answer is: 18", "\\\\boxed{0.5}"], references=["18", "\\\\frac{1}{2}"])
    {'accuracy': 1.0, 'correct': 2, 'total': 2, 'no_answer': 0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AnswerAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            reference_urls=["https://arxiv.org/abs/2402.16352", "https://github.com/huggingface/Math-Verify"],
        )

    def _compute(self, predictions, references, extract: bool = True, timeout: float = 5.0):
        answers = []
        for text in predictions:
            answer = (extract_answer(text) if extract and text else None) or (text or "").strip() or None
            answers.append(answer)
        correct = check_batch(list(zip(answers, [str(r) for r in references])), timeout=timeout)
        return {
            "accuracy": sum(correct) / len(correct) if correct else 0.0,
            "correct": sum(correct),
            "total": len(correct),
            "no_answer": sum(a is None for a in answers),
        }
