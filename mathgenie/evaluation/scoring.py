"""Scoring predictions against benchmark answers: accuracy per benchmark, per MATH subject and level, and maj@k.

Two scorers (`SCORERS`):

- ``math-verify`` (`score`): `mathgenie.answers.check_batch` (exact fast paths, then math-verify with a relative
  numeric guard and a deadline) on the extracted final answer.
- ``mathcoder`` (`score_mathcoder`): MathCoder's harness, which the paper's numbers come from (`mathcoder.py`): its
  own extraction from the solution's last block and an absolute 0.01 tolerance.

As in MathCoder's harness, accuracy is correct / all items: a question with no extracted answer counts as wrong.

    correct = score(predicted_answers, gold_answers)
    correct = score_mathcoder(last_blocks, gold_answers, benchmarks)
    table = accuracy_table(rows)   # rows with benchmark, type, level, correct
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from mathgenie.answers import check_batch, normalize_answer

SCORERS = ("math-verify", "mathcoder")
_MATHCODER_CHECK = "mathgenie.evaluation.mathcoder:mathcoder_equal"
_MATHCODER_GSM8K_CHECK = "mathgenie.evaluation.mathcoder:gsm8k_equal"  # MathCoder drops letters for GSM8K


def score(predictions: Sequence[str | None], references: Sequence[str], *, num_workers: int | None = None,
          timeout: float | None = 5.0) -> list[bool]:
    """Whether each predicted final answer equals its reference (None = nothing extracted = wrong)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; give one prediction per "
                         "reference")
    pairs = [(None if p is None else str(p), str(r)) for p, r in zip(predictions, references)]
    return check_batch(pairs, num_workers=num_workers, timeout=timeout)


def score_mathcoder(completions: Sequence[str], references: Sequence[str], benchmarks: Sequence[str], *,
                    num_workers: int | None = None, timeout: float | None = 5.0) -> list[bool]:
    """MathCoder's verdict for each ``completion`` (the content of the solution's last block, see
    `mathcoder.completion`), in the answer checker's worker processes with ``timeout`` seconds per pair."""
    if not len(completions) == len(references) == len(benchmarks):
        raise ValueError(f"{len(completions)} completions, {len(references)} references and {len(benchmarks)} "
                         "benchmark names; give one of each per question")
    from mathgenie.answers.pool import default_num_workers, shared_pool

    items = [(str(c or ""), str(r), _MATHCODER_GSM8K_CHECK if b == "gsm8k" else _MATHCODER_CHECK)
             for c, r, b in zip(completions, references, benchmarks)]
    unique = list(dict.fromkeys(items))
    if timeout is None:
        from mathgenie.answers.pool import resolve_check

        verdicts = [resolve_check(check)(c, r) for c, r, check in unique]
    else:
        workers = min(num_workers or default_num_workers(), max(1, len(unique) // 32))
        verdicts = shared_pool().run(unique, timeout=timeout, num_workers=workers)
    by_item = dict(zip(unique, verdicts))
    return [by_item[item] for item in items]


def majority_vote(answers: Iterable[str | None]) -> str | None:
    """The most frequent answer among ``answers`` (compared after `normalize_answer`, so ``0.5`` and ``\\frac{1}{2}``
    are different votes only if normalization does not make them equal); ties go to the answer seen first. None
    answers do not vote; all None gives None."""
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    for answer in answers:
        if answer is None or not str(answer).strip():
            continue
        key = normalize_answer(str(answer))
        counts[key] += 1
        first.setdefault(key, str(answer))
    if not counts:
        return None
    best = max(counts.values())
    return next(first[k] for k in first if counts[k] == best)


@dataclass
class Accuracy:
    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def add(self, ok: bool) -> None:
        self.correct += bool(ok)
        self.total += 1


@dataclass
class BenchmarkScore:
    """One benchmark's result; ``by_subject``/``by_level`` are filled for MATH and MATH-500."""

    benchmark: str
    accuracy: float
    correct: int
    total: int
    no_answer: int = 0  # rows with no extracted answer (counted wrong)
    by_subject: dict[str, dict] = field(default_factory=dict)
    by_level: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def accuracy_table(rows: Iterable[dict]) -> dict[str, BenchmarkScore]:
    """Group scored rows (``benchmark``, ``correct``, optional ``type``, ``level``, ``answer_pred``) into one
    `BenchmarkScore` per benchmark, in order of first appearance."""
    totals: dict[str, Accuracy] = defaultdict(Accuracy)
    subjects: dict[str, dict[str, Accuracy]] = defaultdict(lambda: defaultdict(Accuracy))
    levels: dict[str, dict[str, Accuracy]] = defaultdict(lambda: defaultdict(Accuracy))
    no_answer: Counter[str] = Counter()
    for row in rows:
        name = row["benchmark"]
        totals[name].add(row["correct"])
        no_answer[name] += "answer_pred" in row and row["answer_pred"] is None
        if row.get("type"):
            subjects[name][row["type"]].add(row["correct"])
        if row.get("level") is not None:
            levels[name][f"Level {row['level']}"].add(row["correct"])

    def as_dict(groups: dict[str, Accuracy]) -> dict[str, dict]:
        return {k: {"accuracy": v.accuracy, "correct": v.correct, "total": v.total} for k, v in sorted(groups.items())}

    return {
        name: BenchmarkScore(name, acc.accuracy, acc.correct, acc.total, no_answer[name],
                             as_dict(subjects.get(name, {})), as_dict(levels.get(name, {})))
        for name, acc in totals.items()
    }


def format_table(scores: dict[str, BenchmarkScore], *, titles: dict[str, str] | None = None) -> str:
    """Markdown: one line per benchmark (accuracy %, correct/total) and the average, then MATH by subject and level."""
    titles = titles or {}
    lines = ["| benchmark | accuracy (%) | correct / total | no answer |", "|---|---:|---:|---:|"]
    for name, s in scores.items():
        lines.append(f"| {titles.get(name, name)} | {100 * s.accuracy:.1f} | {s.correct} / {s.total} | {s.no_answer} |")
    # The paper averages GSM8K, MATH, SVAMP, SimulEq, Mathematics: MATH-500 (a MATH subset) only counts without MATH.
    averaged = [s for name, s in scores.items() if not (name == "math500" and "math" in scores)]
    if len(averaged) > 1:
        avg = sum(s.accuracy for s in averaged) / len(averaged)
        note = " (without MATH-500)" if len(averaged) < len(scores) else ""
        lines.append(f"| **average**{note} | **{100 * avg:.1f}** | | |")
    for name, s in scores.items():
        for label, groups in (("subject", s.by_subject), ("level", s.by_level)):
            if groups:
                lines += ["", f"| {titles.get(name, name)} by {label} | accuracy (%) | correct / total |",
                          "|---|---:|---:|"]
                lines += [f"| {k} | {100 * g['accuracy']:.1f} | {g['correct']} / {g['total']} |"
                          for k, g in groups.items()]
    return "\n".join(lines)


SCORER_TITLES = {"math-verify": "math-verify (%)", "mathcoder": "MathCoder's scorer (%)"}


def format_scorer_comparison(by_scorer: dict[str, dict[str, BenchmarkScore]], *,
                             titles: dict[str, str] | None = None) -> str:
    """Markdown: each benchmark's accuracy under every scorer, side by side (MathCoder's scorer is the one the paper's
    numbers come from)."""
    titles = titles or {}
    names = list(by_scorer)
    benchmarks = list(next(iter(by_scorer.values()), {}))
    lines = ["| benchmark | " + " | ".join(SCORER_TITLES.get(n, n) for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for bench in benchmarks:
        lines.append(f"| {titles.get(bench, bench)} | "
                     + " | ".join(f"{100 * by_scorer[n][bench].accuracy:.1f}" for n in names) + " |")
    return "\n".join(lines)
