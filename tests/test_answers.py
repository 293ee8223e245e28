"""mathgenie.answers: extraction, normalization, equivalence (both directions), guards, timeouts, the pool."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import threading
import time

import pytest

from mathgenie.answers import (
    CheckerPool,
    check_batch,
    extract_answer,
    extract_lce_answer,
    fast_verdict,
    is_equivalent,
    last_boxed,
    math_verify_equal,
    normalize_answer,
)
from mathgenie.answers.pool import shared_pool
from mathgenie.schema import render_blocks, render_conversation

# math-verify never finishes these: a power tower our evaluator refuses to compute, so they reach a worker.
POWER_TOWER = "2^{2^{2^{2^{2^{2}}}}}"
HUGE_POWER = "\\frac{x^{9999999}-1}{x-1} = y"
# Equal pairs outside the fast paths' grammar: math-verify decides them in a worker.
HARD_EQUAL = [("\\log_2 8", "3"), ("x \\le 3", "x \\leq 3"), ("\\{-1\\} \\cup [0,7)", "[0,7) \\cup \\{-1\\}")]


@pytest.fixture(scope="module")
def warm_pool():
    """Boot the shared pool's workers once, so timing-sensitive tests measure the deadline, not a cold import."""
    assert all(fast_verdict(p, g) is None for p, g in HARD_EQUAL)
    assert check_batch(HARD_EQUAL, num_workers=2) == [True] * len(HARD_EQUAL)
    return shared_pool()


# ---------------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("first \\boxed{1}, finally \\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),
        ("\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}}",
         "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
        ("nested \\boxed{\\text{(A)}} ok", "\\text{(A)}"),
        ("\\fbox{x = 4}", "x = 4"),
        ("The answer is $\\boxed 5$", "5"),
        ("cut off: \\boxed{\\frac{1}{", None),
        ("empty \\boxed{}", None),
        ("no answer here", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Janet sells 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", "18"),
        ("Total is 1,234 + 1 = 1,235\n#### 1,235", "1235"),
        ("So she pays 12.\nThe answer is: 12", "12"),
        ("The answer is: \\frac{3}{4}.\n", "\\frac{3}{4}"),
        ("Final Answer: The final answer is $6\\pi$. I hope it is correct.", "6\\pi"),
        ("The answer is $\\boxed{-2}$ and the answer is: 7", "-2"),  # a box beats "The answer is"
        ("I could not solve it.", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_lce_answer_prefers_boxed_in_last_text_block():
    blocks = [
        {"type": "text", "content": "Let's compute."},
        {"type": "code", "content": "print(3/4)"},
        {"type": "execution", "content": "0.75"},
        {"type": "text", "content": "So the probability is $\\boxed{\\frac{3}{4}}$."},
    ]
    assert extract_lce_answer(blocks) == "\\frac{3}{4}"
    assert extract_answer(render_blocks(blocks)) == "\\frac{3}{4}"
    conversation = render_conversation(
        [{"role": "user", "content": "What is 3/4?"}, {"role": "assistant", "content": blocks}]
    )
    assert extract_answer(conversation) == "\\frac{3}{4}"


def test_extract_lce_answer_falls_back_to_last_execution_line():
    blocks = [
        {"type": "text", "content": "Solve with sympy."},
        {"type": "code", "content": "print('roots:')\nprint(2 + 3)"},
        {"type": "execution", "content": "roots:\n5\n\n"},
        {"type": "text", "content": "Done."},
    ]
    assert extract_lce_answer(blocks) == "5"
    # a generation cut inside the next code block still gives the last execution output
    assert extract_answer(render_blocks(blocks[:3]) + "<|code|>print(") == "5"


def test_extract_lce_answer_error_or_nothing_gives_none():
    err = "Traceback (most recent call last):\n  File ...\nNameError: name 'x' is not defined"
    assert extract_lce_answer([{"type": "code", "content": "x"}, {"type": "execution", "content": err}]) is None
    assert extract_lce_answer([{"type": "text", "content": "Hmm."}]) is None
    assert extract_lce_answer([]) is None


def test_extract_lce_answer_rejects_non_blocks():
    with pytest.raises(ValueError, match=r"blocks\[1\].*not a LCE block"):
        extract_lce_answer([{"type": "text", "content": "a"}, {"role": "assistant", "content": "b"}])


def test_extract_answer_matches_the_gold_of_every_math_test_solution(real_data):
    rows = [json.loads(line) for line in (real_data / "math" / "test.jsonl").open()]
    extracted = [extract_answer(r["solution"]) for r in rows]
    assert sum(e == r["answer"].strip() for e, r in zip(extracted, rows)) == len(rows)


# ---------------------------------------------------------------------------------------------------------------------
# Normalization
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, normalized",
    [
        ("$x = \\dfrac{1}{2}$.", "\\frac{1}{2}"),
        ("10,\\!000 \\text{ dollars}", "10000"),
        ("\\$1,200.50", "1200.50"),
        ("72^\\circ", "72"),
        ("20\\%", "20"),
        ("\\left( \\frac{15}{4}, \\frac{1}{2}, 0 \\right)", "(\\frac{15}{4},\\frac{1}{2},0)"),
        ("7, -2, \\text{ and } -5", "7,-2,-5"),
        ("\\text{(C)}", "C"),
        ("440\\text{ cm}^2", "440"),
        ("\\frac 12", "\\frac{1}{2}"),
        ("\\pi r^2", "\\pi r^2"),
        ("18 dollars", "18"),
        ("4210_{5}", "4210_5"),
        ("(1,2)", "(1,2)"),  # a tuple keeps its comma
        ("45^\\circ, 135^\\circ", "45,135"),  # a list, not 45135
        ("2\\mathrm{i}", "2i"),
    ],
)
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


# ---------------------------------------------------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------------------------------------------------

EQUAL = [
    # numbers, GSM8K-style predictions
    ("18", "18"), ("18", "18.0"), ("18", "18.00"), ("18", "\\$18"), ("18", "18 dollars"), ("18", "$18$"),
    ("1234", "1,234"), ("1000000", "1,000,000"), ("10000", "10,\\!000"), ("-5", "-5.0"),
    ("18", "18.000000000000004"), ("0.3", "0.30000000000000004"),
    # fractions
    ("\\frac{1}{2}", "\\dfrac{1}{2}"), ("\\frac{1}{2}", "\\tfrac12"), ("\\frac{1}{2}", "1/2"), ("\\frac{1}{2}", "0.5"),
    ("-\\frac{3}{4}", "-0.75"), ("\\frac{3}{4}", "\\frac{6}{8}"), ("\\frac{1}{3}", "0.333333"),
    ("\\frac{1}{3}", "0.3333333333333333"), ("6\\frac{1}{4}", "6.25"), ("2\\frac{1}{2}", "\\frac{5}{2}"),
    # roots, pi, e, complex
    ("2\\sqrt{2}", "\\sqrt{8}"), ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt3"), ("\\frac{\\sqrt{3}}{2}", "0.866025"),
    ("\\frac{\\pi}{2}", "pi/2"), ("6\\pi+2", "2+6\\pi"), ("e^{16}-1", "-1 + exp(16)"), ("14 - i", "14.0 + -1.0i"),
    ("\\frac{7}{5} + \\frac{1}{5} i", "1.4+0.2i"), ("\\sqrt{-4}", "2i"),
    # degrees, percent, units, prefixes, text, choices, bases
    ("72^\\circ", "72"), ("30", "30^{\\circ}"), ("20\\%", "20"), ("20\\%", "0.2"), ("25\\%", "25 \\%"),
    ("440\\text{ cm}^2", "440"), ("5 \\text{ inches}", "5"), ("x = 4", "4"), ("k = 15", "15"), ("x=4", "x = 4"),
    ("\\text{Devon}", "Devon"), ("\\text{odd}", "odd"), ("\\text{(C)}", "C"), ("\\text{(C)}", "(C)"),
    ("1202_3", "1202"), ("1202_3", "1202_{3}"),
    # tuples, intervals, unions, sets, lists, matrices
    ("(1,2)", "\\left(1, 2\\right)"), ("(-\\infty, 3)", "(-\\infty,3)"), ("[2, 5)", "\\left[2,5\\right)"),
    ("(-\\infty,0)\\cup(0,\\infty)", "(0,\\infty)\\cup(-\\infty,0)"), ("(0,2]", "(0,1]\\cup(1,2]"),
    ("\\{1,2,3\\}", "\\{3,1,2\\}"), ("1, 2", "2, 1"), ("7, -2, \\text{ and } -5", "-5, 7, -2"),
    ("\\{1\\pm\\sqrt{5},-2\\}", "\\{-2, 1+\\sqrt5, 1-\\sqrt5\\}"), ("\\pm 3", "3, -3"),
    ("\\begin{pmatrix} 7 & 1 \\\\ -1 & -3 \\end{pmatrix}", "\\begin{bmatrix} 7&1\\\\-1&-3 \\end{bmatrix}"),
    ("\\begin{pmatrix} 1/5 \\\\ -3/5 \\end{pmatrix}", "\\begin{pmatrix} 0.2 \\\\ -0.6 \\end{pmatrix}"),
    # expressions and equations
    ("x^2+7x+10", "(x+2)(x+5)"), ("y = 2x + 3", "y=3+2x"), ("4x-5y=-50", "5y-4x=50"), *HARD_EQUAL,
    ("\\frac{x^2}{16} - \\frac{y^2}{9} = 1", "9x^2 - 16y^2 = 144"), ("\\cos 60^\\circ", "\\frac{1}{2}"),
]

NOT_EQUAL = [
    # math-verify 0.9 accepts the first four (Math-Verify#14); the checker must not
    ("\\frac{1}{2004!}", "\\frac{1}{2006!}"), ("1/2^{99}", "1/2^{98}"),
    ("\\frac{2^{2005}+1}{3\\cdot 2^{2006}}", "\\frac{1}{3\\cdot 2^{2006}}"), ("\\frac{1}{2^{30}}", "0.000000"),
    ("1-\\frac{1}{e}", "1+\\frac{1}{e}"), ("\\pm 2021", "2021"),
    # numbers
    ("18", "19"), ("18", "-18"), ("100000", "100000.01"), ("1000", "1000.01"), ("5", "5.1"), ("0.303", "0.3"),
    ("\\frac{1}{3}", "0.33"), ("\\frac{2}{3}", "\\frac{3}{2}"), ("\\frac{1}{2}", "\\frac{1}{0}"),
    ("1234", "1,235"), ("20\\%", "2"), ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{3}}{3}"), ("2\\pi", "6.28"),
    ("14 - i", "14 + i"),
    # structure
    ("(1,2]", "(1,2)"), ("(1,2]", "[1,2]"), ("(1,2)", "(2,1)"),
    ("(-\\infty,0]\\cup[4,\\infty)", "(-\\infty,0)\\cup[4,\\infty)"),
    ("\\{1,2\\}", "\\{1,3\\}"), ("1, 2, 3", "1, 2"), ("(1,2,3)", "(1,3,2)"),
    ("\\begin{pmatrix} 7 & 1 \\\\ -1 & -3 \\end{pmatrix}", "\\begin{pmatrix} 7 & 1 \\\\ -1 & 3 \\end{pmatrix}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\end{pmatrix}"),
    # text, choices, bases, expressions, equations
    ("\\text{Devon}", "Navin"), ("\\text{(C)}", "D"), ("\\text{June 20}", "June 19"), ("1202_3", "1202_4"),
    ("x^2+7x+10", "(x+2)(x+6)"), ("x+1", "y+1"), ("y = 2x", "y = 2x + 1"), ("4x-5y=-50", "4x-6y=-50"),
    ("\\cos 58^\\circ", "\\cos 59^\\circ"),
]


@pytest.mark.parametrize("gold, pred", EQUAL)
def test_equal_pairs_both_directions(gold, pred, warm_pool):
    assert is_equivalent(pred, gold)
    assert is_equivalent(gold, pred)


@pytest.mark.parametrize("gold, pred", NOT_EQUAL)
def test_not_equal_pairs_both_directions(gold, pred, warm_pool):
    assert not is_equivalent(pred, gold)
    assert not is_equivalent(gold, pred)


def test_none_or_empty_never_equal():
    assert not is_equivalent(None, "5")
    assert not is_equivalent("", "5")
    assert not is_equivalent("5", "")
    assert check_batch([(None, "5"), ("5", "5")]) == [False, True]


@pytest.mark.parametrize(
    "gold, pred",
    [("\\frac{1}{2004!}", "\\frac{1}{2006!}"), ("1/2^{99}", "1/2^{98}"), ("\\frac{1}{2^{30}}", "0.000000"),
     ("\\frac{2^{2005}+1}{3\\cdot 2^{2006}}", "\\frac{1}{3\\cdot 2^{2006}}"), ("(1/2^{99}, 1)", "(1/2^{98}, 1)")],
)
def test_numeric_guard_overrules_math_verify_false_positives(gold, pred):
    from math_verify import parse, verify

    assert verify(parse(f"${gold}$"), parse(f"${pred}$")), "math-verify no longer accepts this pair: drop the case"
    assert not math_verify_equal(pred, gold)  # math-verify + guard alone, without the fast paths
    assert fast_verdict(pred, gold) is False


def test_guard_keeps_what_math_verify_rightly_accepts():
    assert math_verify_equal("0.333333", "\\frac{1}{3}")
    assert math_verify_equal("9", "9\\%") and math_verify_equal("0.09", "9\\%")
    assert math_verify_equal("\\sqrt{2}/2", "\\frac{1}{\\sqrt 2}")


def test_unparseable_gold_compares_normalized_strings():
    assert math_verify_equal("$\\text{ ???}$", "\\text{ ???}")
    assert not math_verify_equal("\\text{ !!!}", "\\text{ ???}")


# ---------------------------------------------------------------------------------------------------------------------
# Real data: MATH and GSM8K test golds, reformatted and perturbed
# ---------------------------------------------------------------------------------------------------------------------

_INT = re.compile(r"(?<![\d.])\d+(?![\d.])")


def _reformatted(gold: str) -> list[str]:
    out = [f"${gold}$", f"\\boxed{{{gold}}}", f" {gold}. "]
    if "\\frac" in gold:
        out.append(gold.replace("\\frac", "\\dfrac"))
    if re.fullmatch(r"-?\d+", gold):
        out += [f"x = {gold}", f"{gold}.0", f"{int(gold):,}"]
    return out


def _perturbed(gold: str, rng: random.Random) -> list[str]:
    if "\\text" in gold or "_" in gold:  # units and bases: a changed digit may not change the value
        return []
    nums = list(_INT.finditer(gold))
    if not nums or "^" in gold:
        return []
    m = rng.choice(nums)
    return [gold[:m.start()] + str(int(m.group()) + 1) + gold[m.end():]]


def test_real_math_golds_reformatted_and_perturbed(real_data, warm_pool):
    golds = [json.loads(line)["answer"] for line in (real_data / "math" / "test.jsonl").open()]
    rng = random.Random(0)
    golds = rng.sample([g for g in golds if g.strip()], 1500)
    equal = [(p, g) for g in golds for p in _reformatted(g)]
    different = [(p, g) for g in golds for p in _perturbed(g, rng)]
    verdicts = check_batch(equal + different)
    missed = [pair for pair, v in zip(equal, verdicts[:len(equal)]) if not v]
    accepted = [pair for pair, v in zip(different, verdicts[len(equal):]) if v]
    assert len(equal) > 5000 and len(different) > 800
    assert missed == []
    assert accepted == []


def test_real_gsm8k_golds_against_model_style_predictions(real_data):
    golds = [json.loads(line)["answer"] for line in (real_data / "gsm8k" / "test.jsonl").open()]
    pairs, labels = [], []
    for g in golds:
        n = int(g.replace(",", ""))
        for text in (f"#### {n:,}", f"The answer is: \\${n:,}.00", f"The answer is: {n} dollars.", f"\\boxed{{{n}}}"):
            pairs.append((extract_answer(text), g))
            labels.append(True)
        for wrong in (n + 1, n * 10, -n if n else 1, n + 0.5):
            pairs.append((str(wrong), g))
            labels.append(False)
    verdicts = check_batch(pairs)
    assert [(p, lab) for p, v, lab in zip(pairs, verdicts, labels) if v != lab] == []


# ---------------------------------------------------------------------------------------------------------------------
# Batch API, timeouts, worker processes
# ---------------------------------------------------------------------------------------------------------------------


def test_check_batch_equals_serial_results(warm_pool):
    pairs = [(p, g) for g, p in EQUAL[::3] + NOT_EQUAL[::3]]
    pairs += [*HARD_EQUAL, ("\\log_2 8", "4"), (None, "1"), pairs[0], pairs[1]]
    assert check_batch(pairs, num_workers=2) == [is_equivalent(p, g) for p, g in pairs]
    assert check_batch(pairs, timeout=None) == [is_equivalent(p, g, timeout=None) for p, g in pairs]


def test_check_batch_rejects_malformed_pairs():
    with pytest.raises(TypeError, match=r"pairs\[1\]"):
        check_batch([("1", "1"), ("1",)])
    with pytest.raises(TypeError, match=r"pairs\[0\]"):
        check_batch([("1", 2)])


def test_timeout_works_from_a_thread(warm_pool):
    before = warm_pool.timeouts
    result = {}

    def call():
        start = time.monotonic()
        result["equal"] = is_equivalent(POWER_TOWER, "3", timeout=1.0)
        result["seconds"] = time.monotonic() - start

    worker = threading.Thread(target=call)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert result["equal"] is False
    assert warm_pool.timeouts == before + 1
    assert result["seconds"] < 30  # the deadline, not math-verify, ended the call
    assert is_equivalent(*HARD_EQUAL[0])  # the replaced worker serves the next call


def test_timeouts_in_a_batch_only_cost_their_own_items(warm_pool):
    pairs = [(POWER_TOWER, "3"), HARD_EQUAL[0], (HUGE_POWER, "y = 1"), HARD_EQUAL[1], ("\\frac{1}{2}", "0.5")]
    assert check_batch(pairs, timeout=1.0, num_workers=2) == [False, True, False, True, True]


def _check_in_child(args):
    return is_equivalent(*args, timeout=1.0)


def test_works_inside_multiprocessing_workers(warm_pool):
    # A fork of a process whose pool is running (the child must not reuse the parent's pipes), daemonic workers
    # (which may not start multiprocessing children: our workers are plain subprocesses).
    with multiprocessing.get_context("fork").Pool(2) as pool:
        verdicts = pool.map(_check_in_child, [(POWER_TOWER, "3"), HARD_EQUAL[0], ("1/2", "0.5")])
    assert verdicts == [False, True, True]
    assert is_equivalent(*HARD_EQUAL[1])  # the parent's pool is untouched


def test_a_crashed_worker_is_replaced():
    with CheckerPool() as pool:
        result = {}
        runner = threading.Thread(target=lambda: result.update(v=pool.run([(POWER_TOWER, "3")], timeout=60,
                                                                           num_workers=1)))
        runner.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (pool._workers and pool._workers[0].job is not None):
            time.sleep(0.05)
        os.kill(pool._workers[0].proc.pid, 9)
        runner.join(timeout=60)
        assert result["v"] == [False] and pool.crashes == 1
        assert pool.run([HARD_EQUAL[0]], timeout=30, num_workers=1) == [True]
