"""Answer equivalence: cheap exact paths first, math-verify for the rest, a numeric guard on its "equal".

Order of `is_equivalent(pred, gold)`:

1. ``pred is None`` or an empty gold: not equal.
2. Equal normalized strings (`normalize_answer`), or equal words ignoring case (``Friday``/``friday``): equal.
3. Both answers evaluate (`numeric.parse_value`: numbers, fractions, roots, pi, e, i, factorials, variables,
   tuples, sets, intervals, matrices): the exact/60-digit comparison decides when it can.
4. Otherwise math-verify (``parse`` + ``verify``) in a worker process of `mathgenie.answers.pool` with a deadline,
   because its own SIGALRM timeout neither works off the main thread nor stops C code. If it says equal but both
   sides evaluate with sympy to numbers more than 1e-5 apart (relative), the answer is not equal: this removes the
   false positives of its ``evalf(chop=True)`` on tiny values (``1/2^99`` vs ``1/2^98``).
"""

from __future__ import annotations

import functools
import logging
import re

from mathgenie.answers import numeric
from mathgenie.answers.normalize import has_percent, is_text_answer, normalize_answer, split_base, strip_delimiters

logger = logging.getLogger(__name__)

_GUARD_RTOL = 1e-5
_CHOICE = re.compile(r"[A-E]")
_TRIG = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)|\b(?:sin|cos|tan)\(")
_TEXT_ONLY = re.compile(r"\s*\$?\s*\\(?:text|mbox|textbf|mathrm)\s*\{[^{}]*[A-Za-z]{2}[^{}]*\}\s*\.?\s*\$?\s*")


@functools.lru_cache(maxsize=1 << 16)
def _analyze(answer: str) -> tuple[str, numeric.Value | None, bool, bool, bool]:
    """(normalized, value or None, has a percent sign, is all ``\\text{...}`` with a word in it, has degrees)."""
    norm = normalize_answer(answer)
    degrees = "\\circ" in answer or "°" in answer or "\\degree" in answer
    return norm, numeric.parse_value(norm, degrees), has_percent(answer), bool(_TEXT_ONLY.fullmatch(answer)), degrees


def _percent_variants(value: numeric.Value, percent: bool) -> list[numeric.Value]:
    """``20\\%`` may be compared as 20 or as 0.2 (math-verify accepts both)."""
    if not percent or not isinstance(value, numeric.Scalar):
        return [value]
    return [value, numeric.Scalar(value.value / 100)]


def fast_verdict(pred: str | None, gold: str | None) -> bool | None:
    """The verdict of the cheap paths (steps 1-3), or None when math-verify has to decide."""
    if pred is None or gold is None:
        return False
    p_norm, p_value, p_pct, p_text_only, p_deg = _analyze(pred)
    g_norm, g_value, g_pct, g_text_only, g_deg = _analyze(gold)
    if not g_norm:
        return False
    if p_norm == g_norm:
        return True
    if not p_norm:
        return False
    g_text, p_text = is_text_answer(g_norm), is_text_answer(p_norm)
    if (g_text or p_text) and p_norm.lower() == g_norm.lower():
        return True
    if g_text and p_text:
        return False  # two words that differ: nothing more to compare
    if len(p_norm) == len(g_norm) == 1 and (_CHOICE.fullmatch(g_norm) or _CHOICE.fullmatch(p_norm)):
        return p_norm.upper() == g_norm.upper()  # multiple choice "(C)" against "c"
    if g_text_only or p_text_only:  # "\text{June 20}", "\text{1:03 PM}": words, compared as words
        return p_norm.lower() == g_norm.lower()
    (p_digits, p_base), (g_digits, g_base) = split_base(p_norm), split_base(g_norm)
    if p_base or g_base:  # "1202_3" equals "1202" (the base is in the question) but not "1202_4"
        return p_base != g_base and None in (p_base, g_base) and p_digits == g_digits
    if p_deg != g_deg and _TRIG.search(p_norm if g_deg else g_norm):  # "\cos 13" against "\cos 13^\circ"
        p_value, g_value = numeric.parse_value(p_norm, True), numeric.parse_value(g_norm, True)
    if p_value is None or g_value is None:
        return None
    verdicts = [numeric.compare_values(p, g) for p in _percent_variants(p_value, p_pct)
                for g in _percent_variants(g_value, g_pct)]
    if True in verdicts:
        return True
    if all(v is False for v in verdicts):
        return False
    return None


# ---------------------------------------------------------------------------------------------------------------------
# math-verify (runs in a worker process; see pool.py)
# ---------------------------------------------------------------------------------------------------------------------


def _for_math_verify(answer: str) -> str:
    s = strip_delimiters(answer)
    s = s.replace("\\!", "").replace("{,}", ",")
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s.strip()):
        s = s.replace(",", "")
    return f"${s}$"


@functools.lru_cache(maxsize=8192)
def _mv_parse(answer: str) -> list:
    from math_verify import parse

    return parse(_for_math_verify(answer), parsing_timeout=None)


def _silence_math_verify() -> None:
    import math_verify.grader
    import math_verify.parser

    # We enforce timeouts ourselves (pool deadlines); its "timeout is disabled" warning would repeat per process.
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)


def math_verify_equal(pred: str, gold: str) -> bool:
    """math-verify's verdict with our numeric guard, run in the calling process with no time limit."""
    from math_verify import verify
    from sympy import Basic
    from sympy.matrices import MatrixBase

    _silence_math_verify()
    gold_parsed = _mv_parse(gold)
    if not any(isinstance(g, (Basic, MatrixBase)) for g in gold_parsed):
        # A gold math-verify can't parse: only the normalized strings could match, and they did not.
        return normalize_answer(pred) == normalize_answer(gold)
    pred_parsed = _mv_parse(pred)
    if not verify(gold_parsed, pred_parsed, timeout_seconds=None, allow_set_relation_comp=True):
        return False
    pairs = [(g, p) for g in gold_parsed for p in pred_parsed
             if isinstance(g, (Basic, MatrixBase)) and isinstance(p, (Basic, MatrixBase))]
    if pairs and all(numerically_distinct(g, p) for g, p in pairs):
        return False
    return True


def _values(expr) -> list:
    """The numbers an expression may stand for: a percentage ``9%`` is both 9 and 0.09 for math-verify."""
    from math_verify.grader import get_pct_val

    pct = get_pct_val(expr)
    return [expr] if pct is None else [expr, pct]


def numerically_distinct(a, b) -> bool:
    """True only when ``a`` and ``b`` are constant sympy numbers (or same-shaped tuples/matrices/sets of them) whose
    50-digit values differ by more than 1e-5 relative. False when they are close or we cannot evaluate them."""
    from sympy import FiniteSet, Interval, Tuple
    from sympy.matrices import MatrixBase
    from math_verify.grader import is_assignment_relation, take_last_relation

    if is_assignment_relation(a):
        a = take_last_relation(a).rhs
    if is_assignment_relation(b):
        b = take_last_relation(b).rhs
    try:
        if isinstance(a, MatrixBase) and isinstance(b, MatrixBase):
            return a.shape == b.shape and any(numerically_distinct(x, y) for x, y in zip(a, b))
        if isinstance(a, Interval) and isinstance(b, Interval):
            return numerically_distinct(a.start, b.start) or numerically_distinct(a.end, b.end)
        if isinstance(a, Tuple) and isinstance(b, Tuple):
            return len(a) == len(b) and any(numerically_distinct(x, y) for x, y in zip(a, b))
        if isinstance(a, FiniteSet) and isinstance(b, FiniteSet):
            if len(a) != len(b):
                return False
            xs, ys = [_number(x) for x in a.args], [_number(y) for y in b.args]
            if any(v is None for v in xs + ys):
                return False
            return any(all(_far(x, y) for y in ys) for x in xs)
        xs, ys = [_number(x) for x in _values(a)], [_number(y) for y in _values(b)]
        if any(v is None for v in xs + ys):
            return False
        return all(_far(x, y) for x in xs for y in ys)
    except Exception:  # sympy raises many types on odd inputs; when in doubt, trust math-verify
        return False


def _number(expr):
    """The 50-digit value of a constant sympy expression (real or complex), or None."""
    from sympy import Expr

    if not isinstance(expr, Expr) or not expr.is_number:
        return None
    value = expr.evalf(50)
    return value if value.is_finite else None


def _far(x, y) -> bool:
    diff, scale = abs(x - y), max(abs(x), abs(y))
    return bool(scale != 0 and diff > _GUARD_RTOL * scale)
