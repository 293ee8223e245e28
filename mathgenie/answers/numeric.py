"""Values of normalized answers and their comparison: the exact fast path of the checker.

`parse_value` turns a normalized answer into a number (`latex_eval`), a tuple/interval/set/matrix of numbers, a
union of intervals (merged into a canonical form), or an equation ``lhs = rhs`` (``lhs - rhs`` at three points).
`compare_values` then says EQUAL, DIFFERENT or UNSURE. Exact rationals are what fix math-verify's false positives on
tiny values (``1/2004!`` vs ``1/2006!``: its ``evalf(chop=True)`` makes both zero). Anything outside the grammar
(relations, most functions, text) gives None and goes to math-verify.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Union

import mpmath

from mathgenie.answers.latex_eval import Number, Undefined, Unsupported, as_mp, ctx, evaluate

_MAX_LEN = 400  # longer answers go straight to math-verify
EQUAL, DIFFERENT, UNSURE = True, False, None


@dataclass(frozen=True)
class Scalar:
    value: Number
    decimal: tuple[int, int] | None = None  # (significant digits, decimal places) of a plain decimal literal


@dataclass(frozen=True)
class Seq:
    """``(a, b]``, ``[1, 2, 3]``, ``\\{1, 2\\}``, ``1, 2`` or a matrix (``open="matrix"``, ``close`` = #columns)."""

    open: str
    close: str
    items: tuple
    ordered: bool


@dataclass(frozen=True)
class Union_:
    intervals: tuple  # sorted, merged two-item Seqs


@dataclass(frozen=True)
class Equation:
    values: tuple  # lhs - rhs at the three test points of `latex_eval`


Value = Union[Scalar, Seq, Union_, Equation]
UNDEFINED = Scalar(ctx.nan)
_INTEGER = re.compile(r"-?\d+")
_SIMPLE_FRAC = re.compile(r"(-?)\\frac\{(\d+)\}\{(\d+)\}")
_DECIMAL = re.compile(r"[-+]?(\d*)\.(\d+)|[-+]?(\d+)\.")
_RELATION = re.compile(r"<|>|\\le|\\ge|\\ne|\\neq|\\approx|\\sim")
_OPENERS, _CLOSERS = "([{", ")]}"


def _split_top(s: str, sep: str) -> list[str]:
    """Split at ``sep`` outside brackets (``\\{`` and ``\\}`` count as brackets)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and s[i + 1:i + 2] in ("{", "}"):
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i = i + len(sep)
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _scalar(s: str, degrees: bool) -> Scalar:
    if not s:
        raise Unsupported("empty item")
    if _INTEGER.fullmatch(s):  # the common cases, without the parser
        return Scalar(Fraction(int(s)))
    m = _SIMPLE_FRAC.fullmatch(s)
    if m and m.group(3) != "0":
        return Scalar(Fraction(int(m.group(2)), int(m.group(3))) * (-1 if m.group(1) else 1))
    if s in ("\\infty", "+\\infty", "-\\infty"):
        return Scalar(-ctx.inf if s.startswith("-") else ctx.inf)
    value, _ = evaluate(s, degrees=degrees)
    m = _DECIMAL.fullmatch(s)
    decimal = None
    if m:
        digits = m.group(3) if m.group(3) is not None else (m.group(1) or "") + m.group(2)
        decimal = (len(digits.lstrip("0")) or 1, len(m.group(2) or ""))
    return Scalar(value, decimal)


def _items(parts: list[str], degrees: bool) -> tuple[Scalar, ...]:
    """Scalars of a list; ``a \\pm b`` counts as the two items ``a+b`` and ``a-b``."""
    out = []
    for part in parts:
        pm = _split_top(part, "\\pm")
        if len(pm) == 2:
            out += [_scalar(f"{pm[0]}+({pm[1]})", degrees), _scalar(f"{pm[0]}-({pm[1]})", degrees)]
        else:
            out.append(_scalar(part, degrees))
    return tuple(out)


def _bracketed(s: str, degrees: bool) -> Seq | None:
    """``(a, b)``, ``(a, b]``, ``[a, b, c]``: a bracket at each end that close each other and a top-level comma."""
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return None
    depth = 0
    for i, ch in enumerate(s):
        depth += (ch in _OPENERS) - (ch in _CLOSERS)
        if depth == 0 and i < len(s) - 1:
            return None  # "(1+2)(3+4)": the first bracket closes early
    items = _split_top(s[1:-1], ",")
    if len(items) == 1:
        return None
    return Seq(s[0], s[-1], tuple(_scalar(x, degrees) for x in items), True)


def _matrix(s: str, degrees: bool) -> Seq | None:
    m = re.fullmatch(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", s, re.S)
    if not m:
        return None
    rows = [r for r in m.group(1).split("\\\\") if r.strip()]
    cells = [[_scalar(c.strip(), degrees) for c in r.split("&")] for r in rows]
    if not cells or len({len(r) for r in cells}) != 1:
        raise Unsupported("ragged matrix")
    return Seq("matrix", str(len(cells[0])), tuple(c for r in cells for c in r), True)


def _equation(norm: str, degrees: bool) -> Equation | None:
    lhs, rhs = norm.split("=")
    values = []
    for point in range(3):
        left, symbolic = evaluate(lhs, point=point, degrees=degrees)
        right, symbolic_r = evaluate(rhs, point=point, degrees=degrees)
        if not (symbolic or symbolic_r):
            return None  # "2 = 2" is not an equation in unknowns
        values.append(as_mp(left) - as_mp(right))
    return Equation(tuple(values))


def parse_value(norm: str, degrees: bool = False) -> Value | None:
    """The value of a normalized answer, or None if it is outside the grammar. ``degrees``: the answer was written
    with ``^\\circ``, so trigonometric arguments are degrees."""
    if not norm or len(norm) > _MAX_LEN or _RELATION.search(norm):
        return None
    try:
        if _INTEGER.fullmatch(norm):
            return Scalar(Fraction(int(norm)))
        if "=" in norm:
            return _equation(norm, degrees) if norm.count("=") == 1 and "," not in norm else None
        if norm.startswith("\\begin"):
            return _matrix(norm, degrees)
        if "\\cup" in norm:
            parts = [_bracketed(p.strip(), degrees) for p in norm.split("\\cup")]
            if any(p is None or len(p.items) != 2 for p in parts):
                return None
            return _canonical_union(parts)
        seq = _bracketed(norm, degrees)
        if seq is not None:
            return seq
        if norm.startswith("\\{") and norm.endswith("\\}"):
            return Seq("{", "}", _items(_split_top(norm[2:-2], ","), degrees), False)
        items = _items(_split_top(norm, ","), degrees)
        return Seq("{", "}", items, False) if len(items) > 1 else items[0]
    except Undefined:
        return UNDEFINED
    except (Unsupported, ValueError, ZeroDivisionError, OverflowError, IndexError, RecursionError):
        return None


def numbers_match(a: Scalar, b: Scalar) -> bool | None:
    """Exact rationals compare exactly. A decimal with at least 6 significant digits matches a value that rounds to
    it (``0.333333`` = 1/3), one with 12+ digits matches within 1e-12 relative (float output such as
    ``0.30000000000000004``). Otherwise values equal to 1e-40 relative are equal and values more than 1e-9 apart are
    different; in between we can't tell. So ``n`` never matches ``n.01``."""
    x, y = a.value, b.value
    exact = isinstance(x, Fraction) and isinstance(y, Fraction)
    if exact:
        if x == y:
            return EQUAL
        if a.decimal is None and b.decimal is None:
            return DIFFERENT
        diff, scale = abs(x - y), max(abs(x), abs(y))
        half_unit, noise = (lambda places: Fraction(1, 2 * 10**places)), Fraction(1, 10**12)
    else:
        X, Y = as_mp(x), as_mp(y)
        if ctx.isinf(X) or ctx.isinf(Y):
            return EQUAL if X == Y else DIFFERENT
        diff, scale = abs(X - Y), max(abs(X), abs(Y))
        if diff <= scale * ctx.mpf("1e-40"):
            return EQUAL
        half_unit, noise = (lambda places: ctx.mpf(10) ** -places / 2 * (1 + ctx.mpf("1e-12"))), ctx.mpf("1e-12")
    for side in (a, b):
        if side.decimal is not None:
            sig, places = side.decimal
            if sig >= 6 and diff <= half_unit(places):
                return EQUAL
            if sig >= 12 and diff <= scale * noise:
                return EQUAL
    if exact or diff > scale * ctx.mpf("1e-9"):
        return DIFFERENT
    return UNSURE


def _all(verdicts) -> bool | None:
    verdicts = list(verdicts)
    if all(v is EQUAL for v in verdicts):
        return EQUAL
    return DIFFERENT if DIFFERENT in verdicts else UNSURE


def _is_interval(s: Seq) -> bool:
    if len(s.items) != 2 or s.open not in "([" or s.close not in ")]":
        return False
    lo, hi = (as_mp(x.value) for x in s.items)
    return not isinstance(lo, mpmath.mpc) and not isinstance(hi, mpmath.mpc) and lo < hi


def _canonical_union(parts: list[Seq]) -> Union_:
    """Sort the intervals and merge overlapping or touching ones, so that equal sets have equal forms."""
    if not all(_is_interval(p) for p in parts):
        raise Unsupported("not a union of intervals")
    parts = sorted(parts, key=lambda p: (as_mp(p.items[0].value), p.open != "["))
    merged = [parts[0]]
    for p in parts[1:]:
        last = merged[-1]
        last_hi, p_lo, p_hi = as_mp(last.items[1].value), as_mp(p.items[0].value), as_mp(p.items[1].value)
        if p_lo < last_hi or (p_lo == last_hi and (last.close == "]" or p.open == "[")):
            if p_hi > last_hi:
                merged[-1] = Seq(last.open, p.close, (last.items[0], p.items[1]), True)
            elif p_hi == last_hi and p.close == "]":
                merged[-1] = Seq(last.open, "]", last.items, True)
        else:
            merged.append(p)
    return Union_(tuple(merged))


def _equations_match(a: Equation, b: Equation) -> bool | None:
    """Equations are equal when ``lhs - rhs`` of one is a constant multiple of the other's (same solution set)."""
    if any(v == 0 for v in a.values + b.values):
        return UNSURE  # a test point on the curve: the ratio says nothing
    ratios = [x / y for x, y in zip(a.values, b.values)]
    spread = max(abs(r - ratios[0]) for r in ratios)
    scale = abs(ratios[0])
    if spread <= scale * ctx.mpf("1e-30"):
        return EQUAL
    return DIFFERENT if spread > scale * ctx.mpf("1e-9") else UNSURE


def compare_values(a: Value, b: Value) -> bool | None:
    """EQUAL / DIFFERENT / UNSURE for two parsed answers. Different kinds (a set against a tuple) are UNSURE."""
    if a is UNDEFINED or b is UNDEFINED:
        return UNSURE if a is b else DIFFERENT
    if isinstance(a, Scalar) and isinstance(b, Scalar):
        return numbers_match(a, b)
    if isinstance(a, Equation) or isinstance(b, Equation):
        return _equations_match(a, b) if isinstance(a, Equation) and isinstance(b, Equation) else UNSURE
    if isinstance(a, Scalar) or isinstance(b, Scalar):
        seq = a if isinstance(a, Seq) else b
        if not isinstance(seq, Seq) or seq.ordered or len(seq.items) < 2:
            return UNSURE
        distinct = all(numbers_match(x, y) is DIFFERENT for i, x in enumerate(seq.items) for y in seq.items[i + 1:])
        return DIFFERENT if distinct else UNSURE  # one number is not a set of several
    if isinstance(a, Union_) or isinstance(b, Union_):
        a, b = (Union_((x,)) if isinstance(x, Seq) and _is_interval(x) else x for x in (a, b))
        if not (isinstance(a, Union_) and isinstance(b, Union_)):
            return UNSURE
        if len(a.intervals) != len(b.intervals):
            return DIFFERENT
        return _all(
            DIFFERENT if (p.open, p.close) != (q.open, q.close) else _all(map(numbers_match, p.items, q.items))
            for p, q in zip(a.intervals, b.intervals)
        )
    if a.ordered != b.ordered or (a.open == "matrix") != (b.open == "matrix"):
        return UNSURE
    if len(a.items) != len(b.items):
        return DIFFERENT
    if a.ordered:
        if (a.open, a.close) != (b.open, b.close):
            return DIFFERENT
        return _all(map(numbers_match, a.items, b.items))
    return _match_unordered(list(a.items), list(b.items))


def _match_unordered(xs: list[Scalar], ys: list[Scalar]) -> bool | None:
    unsure = False
    remaining = list(ys)
    for x in xs:
        verdicts = [numbers_match(x, y) for y in remaining]
        if EQUAL in verdicts:
            remaining.pop(verdicts.index(EQUAL))
        elif UNSURE in verdicts:
            unsure = True
        else:
            return DIFFERENT
    return UNSURE if unsure else EQUAL
