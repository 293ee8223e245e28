"""`--scorer mathcoder`: MathCoder's find_math_answer/is_equal re-implemented, checked on cases where it and
math-verify disagree (absolute tolerance, its extraction rules and quirks, the last block as the prediction), through
the real worker pool; the eval config/CLI take the flag and the model card reports both scorers."""

from __future__ import annotations

import pytest

import datasets
from mathgenie import schema
from mathgenie.answers import extract_lce_answer
from mathgenie.evaluation.mathcoder import completion, find_math_answer, is_equal
from mathgenie.evaluation.scoring import format_table, score, score_mathcoder


@pytest.mark.parametrize("text, expected", [
    ("The answer is $\\boxed{\\dfrac{3}{4}}$.", "\\frac{3}{4}"),  # boxed content, dfrac -> frac
    ("x = 5", "5"),  # the part after the last '='
    ("so the total is 38 cookies", "38"),  # after the last ' is ', a unit word removed
    ("\\boxed{12 \\text{ cm}}", "12"),  # right-hand \text{ units}
    ("\\boxed{x^2+1}", "x+1"),  # quirk: the unit list's empty entry removes every ^2 and ^3
    ("\\boxed{5 \\pm 2}", "5\\2"),  # quirk: the unit 'pm' goes even inside \pm
    ("\\boxed{0.5}", "\\frac{1}{2}"),
    ("3/4", "\\frac{3}{4}"),
    ("The answer is: 7. This is because 3 + 4 = 7.", "7."),  # the last ' is ' wins, then the last '='
])
def test_find_math_answer(text, expected):
    assert find_math_answer(text) == expected


def test_is_equal_absolute_tolerance_and_tuples():
    assert is_equal("0.333", "\\frac{1}{3}") and is_equal("1234.005", "1234.01")
    assert is_equal("0.004", "0")  # absolute, however small the reference
    assert not is_equal("0.02", "0") and not is_equal("", "0")
    assert is_equal("(2*3,5+2)", "(6,7)")
    assert not is_equal("x+1", "x+2")


def _blocks(*texts: str) -> list[dict]:
    kinds = ["text", "code", "execution"]
    return [schema.block(kinds[i % 3] if len(texts) > 1 else "text", t) for i, t in enumerate(texts)]


# (solution blocks, reference, benchmark, MathCoder's verdict, math-verify's verdict)
DISAGREEMENTS = [
    (_blocks("The answer is $\\boxed{0.333}$."), "\\frac{1}{3}", "math", True, False),  # absolute 0.01
    (_blocks("The probability is $\\boxed{0.004}$."), "0", "math", True, False),
    (_blocks("The area is $\\boxed{x^2+1}$."), "x^3+1", "math", True, False),  # exponents stripped as units
    # " is " in a trailing sentence hides the boxed answer from MathCoder's extraction
    (_blocks("So the answer is $\\boxed{\\frac{1}{2}}$. This is because half remains."), "\\frac{1}{2}", "math",
     False, True),
    # the prediction is the last block: MathCoder reads the execution output, we the last text block's \boxed{}
    ([schema.block("text", "So $\\boxed{7}$."), schema.block("code", "print(3 + 5)"), schema.block("execution", "8")],
     "8", "gsm8k", True, False),
]


def test_scorers_disagree_where_expected():
    blocks = [case[0] for case in DISAGREEMENTS]
    references = [case[1] for case in DISAGREEMENTS]
    mathcoder = score_mathcoder([completion(b) for b in blocks], references, [case[2] for case in DISAGREEMENTS])
    math_verify = score([extract_lce_answer(b) for b in blocks], references)
    assert mathcoder == [case[3] for case in DISAGREEMENTS]
    assert math_verify == [case[4] for case in DISAGREEMENTS]


def test_gsm8k_predictions_lose_their_letters():
    assert score_mathcoder(["He has \\boxed{18 apples}"] * 2, ["18"] * 2, ["gsm8k", "math"]) == [True, False]
    assert score_mathcoder([completion([])], ["3"], ["gsm8k"]) == [False]


def test_eval_config_and_cli_take_the_scorer():
    import argparse

    from mathgenie.evaluation.cli import add_parser, config_from_args
    from mathgenie.evaluation.config import EvalConfig, EvalConfigError

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert config_from_args(parser.parse_args(["eval", "--model", "m"])).scorer == "math-verify"
    assert config_from_args(parser.parse_args(["eval", "--model", "m", "--scorer", "mathcoder"])).scorer == "mathcoder"
    with pytest.raises(EvalConfigError, match="scorer='exact'"):
        EvalConfig(scorer="exact")


def test_model_card_reports_both_scorers():
    from huggingface_hub import ModelCard

    from mathgenie.cards import render_model_card
    from mathgenie.evaluation.model_card import update_card
    from mathgenie.evaluation.run import EvalConfig, EvalRun
    from mathgenie.evaluation.scoring import BenchmarkScore, format_scorer_comparison

    by_scorer = {"math-verify": {"gsm8k": BenchmarkScore("gsm8k", 0.5, 5, 10)},
                 "mathcoder": {"gsm8k": BenchmarkScore("gsm8k", 0.6, 6, 10)}}
    cfg = EvalConfig(benchmarks=["gsm8k"], scorer="mathcoder")
    table = format_table(by_scorer["mathcoder"]) + "\n\n" + format_scorer_comparison(by_scorer)
    run = EvalRun(by_scorer["mathcoder"], datasets.DatasetDict(), table, {"resolved_revision": "abc"},
                  scores_by_scorer=by_scorer)
    card = render_model_card(repo_id="org/m", base_model="base/model", datasets=["org/data@v1"],
                             hyperparameters={"learning_rate": 2e-5})
    updated = ModelCard(str(update_card(card, run, cfg, "org/m")))
    entries = {r.metric_name: r.metric_value for r in updated.data.eval_results}
    assert entries == {"accuracy (greedy)": 50.0, "accuracy (greedy, MathCoder scorer)": 60.0}
    assert "| GSM8K | 50.0 | 60.0 |" in updated.text.replace("gsm8k", "GSM8K")
    assert "Scored by MathCoder's scorer" in updated.text and "--scorer mathcoder" in updated.text
