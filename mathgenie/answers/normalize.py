"""Hendrycks-style string normalization of a final answer (the fast path of the checker).

Two answers whose normalized strings are equal are equivalent. The normalization only removes notation that never
changes the value: math delimiters, ``\\boxed{}``, ``\\left``/``\\right``, thin spaces, units (``\\text{ cm}`` or
``18 dollars``), degrees, ``\\%``, ``$``, thousands separators, a trailing period, an ``x =`` prefix and
``\\dfrac``/``\\tfrac``. Anything it cannot decide is left to the numeric and symbolic comparisons.
"""

from __future__ import annotations

import re

from mathgenie.answers.extract import last_boxed

_UNICODE = {"−": "-", "–": "-", "×": "\\times ", "·": "\\cdot ", "÷": "\\div ", "π": "\\pi ", "∞": "\\infty ",
            "√": "\\sqrt", "°": "^\\circ", "≤": "\\le ", "≥": "\\ge ", "\u00a0": " "}
_SPACING = re.compile(r"(?<!\\)\\[!,;:> ]|\\q?quad\b|~|\\displaystyle|\\left\b|\\right\b|\\bigg?[lr]?\b|\\Bigg?[lr]?\b")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ\b|\\degree\b|\^\s*\{\s*\}")
_PERCENT = re.compile(r"\\?%")
_DOLLAR = re.compile(r"\\\$|\$")
# "5 \text{ cm}^2", "10\;\text{edges}", "18\text{ ways.}" after something numeric: a unit, dropped.
_TEXT_UNIT = re.compile(
    r"(?<=[\d}).a-zA-Z])\s*\\(?:text|mbox|mathrm)\s*\{\s*(?![eid]\s*\})[a-zA-Z][a-zA-Z .]*\}"  # not \mathrm{i}
    r"(?:\s*\^\s*\{?\d\}?)?\s*$"
)
_AND = re.compile(r"\s*,?\s*(?:\\(?:text|mbox|mathrm)\s*\{\s*(?:and|or)\s*\}|\band\b)\s*,?\s*")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf|mathit|operatorname)\s*\{([^{}]*)\}")
# "18 dollars", "5 hours." after a plain number (GSM8K-style predictions); words that are math stay.
_WORD_UNIT = re.compile(r"^([-+]?(?:\d[\d,]*)?\.?\d+)\s+(?!(?:pi|sqrt|exp|log|ln|and|or)\b)[a-zA-Z]{2,}[a-zA-Z ]*\.?$")
_PLAIN_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_BASE_SUBSCRIPT = re.compile(r"^(-?[0-9A-Z]+(?:\.[0-9A-Z]+)?)_\{?(\d+)\}?$")
_CHOICE = re.compile(r"^\(?([A-E])\)?$")
_PREFIX = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?\s*(?:=|\\in\b)(?!=)\s*")
_FRAC_SHORT = re.compile(
    r"\\frac\s*(\d|\\[a-zA-Z]+)\s*(\d|\\[a-zA-Z]+)|\\frac\s*(\{[^{}]*\})\s*(\d)|\\frac\s*(\d)\s*(\{)"
)
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d|\\[a-zA-Z]+)")
_CMD_SPACE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])")


def _fix_short_frac(m: re.Match) -> str:
    if m.group(1):  # \frac12, \frac\pi2
        return f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    if m.group(3):  # \frac{a}2
        return f"\\frac{m.group(3)}{{{m.group(4)}}}"
    return f"\\frac{{{m.group(5)}}}{{"  # \frac1{b}


def strip_delimiters(s: str) -> str:
    """Drop the wrappers around an answer: surrounding whitespace, ``$...$``, ``\\(...\\)``, ``\\[...\\]``,
    ``\\boxed{}``/``\\fbox{}`` around the whole answer, and a trailing period."""
    s = s.strip()
    for _ in range(3):
        if not (s[:1] in "$\\" or s[-1:] == "."):
            break
        before = s
        if s.startswith("$$") and s.endswith("$$") and len(s) > 4:
            s = s[2:-2].strip()
        elif s.startswith("$") and s.endswith("$") and len(s) > 2 and s.count("$") == 2:
            s = s[1:-1].strip()
        if (s.startswith("\\(") and s.endswith("\\)")) or (s.startswith("\\[") and s.endswith("\\]")):
            s = s[2:-2].strip()
        if s.startswith(("\\boxed", "\\fbox")):
            inner = last_boxed(s)
            if inner is not None and s.rstrip(". ").endswith("}"):
                s = inner.strip()
        if s.endswith(".") and not s.endswith("\\."):  # "x = 5." and "5." but not "\\."
            s = s[:-1].rstrip()
        if s == before:
            break
    return s


def normalize_answer(s: str) -> str:
    """Normalize a final answer for string comparison (Hendrycks ``strip_string``, extended).

    >>> normalize_answer("$x = \\\\dfrac{1}{2}$.")
    '\\\\frac{1}{2}'
    >>> normalize_answer("10,000 \\\\text{ dollars}")
    '10000'
    """
    s = str(s).strip()
    if _PLAIN_NUMBER.fullmatch(s):  # most answers: nothing to do
        return s[1:] if s.startswith("+") else s
    s = strip_delimiters(s)
    if not s.isascii():
        for k, v in _UNICODE.items():
            s = s.replace(k, v)
    s = s.replace("\n", " ")
    latex = "\\" in s
    if "{" in s:
        s = re.sub(r"\{\s*,\s*\}", ",", s)  # 10{,}000
    if latex or "~" in s:
        s = re.sub(r"\s*,\s*\\!\s*", ",", s)  # "111, \! 111, \! 111" is 111,111,111
        s = _SPACING.sub(" ", s.replace("\\!", ""))  # \! is a negative space: 10,\!000 is one number
        s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
        s = s.replace("bmatrix", "pmatrix").replace("\\infinity", "\\infty").replace("\\inf ", "\\infty ")
    n_degrees = 0
    if latex or "^" in s:
        s, n_degrees = _DEGREES.subn("", s)
    if "%" in s:
        s = _PERCENT.sub("", s)
    if "$" in s:
        s = _DOLLAR.sub("", s).strip()
    if "and" in s or "or" in s:
        s = _AND.sub(",", s).strip(" ,")
    if latex:
        for _ in range(2):  # "\\frac{3}{4}\\pi\\text{ inches}", "5 \\text{ cm}^2"; twice: "10 \\text{ft} \\text{long}"
            if _TEXT_UNIT.search(s) and not re.fullmatch(r"\s*\\(?:text|mbox|mathrm)\s*\{.*\}\s*", s):
                s = _TEXT_UNIT.sub("", s).strip()
        s = _TEXT_WRAPPER.sub(lambda m: m.group(1), s).strip()
    s = strip_delimiters(s)
    if " " in s:
        m = _WORD_UNIT.match(s)
        if m:
            s = m.group(1)
    if "=" in s or "\\in" in s:
        if _PREFIX.match(s) and "=" not in _PREFIX.sub("", s, count=1) and not re.match(r"^\\(?:frac|sqrt)", s):
            s = _PREFIX.sub("", s, count=1)
        s = s.strip()
    if "," in s and _THOUSANDS.match(s) and not n_degrees:  # "10,000"; not "45, 135" or "45^\\circ,135^\\circ"
        s = s.replace(",", "")
    if "_" in s:
        m = _BASE_SUBSCRIPT.match(s.replace(" ", ""))
        if m:  # 1202_{3} -> 1202_3; `split_base` compares the digits when only one side names the base
            s = f"{m.group(1)}_{m.group(2)}"
    if "\\" in s:
        s = _FRAC_SHORT.sub(_fix_short_frac, s)
        s = _SQRT_SHORT.sub(lambda m: f"\\sqrt{{{m.group(1)}}}", s)
        # Spaces carry no meaning in LaTeX except after a command ("\\pi r"), which keeps one.
        s = _CMD_SPACE.sub(r"\1{}", s)
    s = s.replace(" ", "").replace("{}", " ").strip()
    if len(s) <= 3:
        m = _CHOICE.match(s)
        if m:
            s = m.group(1)
    if s.startswith("+") and s[1:2].isdigit():
        s = s[1:]
    return s


def is_text_answer(norm: str) -> bool:
    """A normalized answer made only of words (``Friday``, ``odd``, ``VW``), compared case-insensitively. Two
    lowercase letters (``xy``) are a product of variables, not a word."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z ]*", norm) or len(norm) < 2:
        return False
    return len(norm) > 2 or norm.isupper()


def split_base(norm: str) -> tuple[str, str | None]:
    """``"1202_3"`` -> ``("1202", "3")``; an answer without a base subscript -> ``(norm, None)``."""
    m = _BASE_SUBSCRIPT.match(norm)
    return (m.group(1), m.group(2)) if m else (norm, None)


def has_percent(s: str) -> bool:
    return "%" in s
