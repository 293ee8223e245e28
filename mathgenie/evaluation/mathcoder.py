"""MathCoder's answer scoring (`mathllm/MathCoder` ``src/utils.py::find_math_answer``/``is_equal`` and
``src/evaluate.py``), re-implemented so our numbers can be put beside the paper's, which come from that harness.

How MathCoder scores one prediction:

1. The prediction is the *last block* of the solution (``debug_result[-1]['content']``: the last text block, or the
   last execution output when the model stopped after code), not an extracted answer.
2. `find_math_answer` runs on both the prediction and the reference: lowercase; the text after the last ``" is "``;
   the content of a greedy ``oxed{...}`` match; the part after the last ``=`` and ``\\approx``; LaTeX wrappers
   removed; Hendrycks' ``_strip_string`` (with MathCoder's changes: ``\\frac`` is fixed only when ``sqrt`` occurs,
   ``0.5`` becomes ``\\frac{1}{2}``); then a hard-coded list of unit words removed *anywhere* in the string. That list
   holds an empty string, so every ``^2`` and ``^3`` is removed too, and ``"am"``/``"pm"``/``"cm"``... go even inside
   words. These quirks are kept on purpose: they are part of the published numbers.
3. For GSM8K every letter is removed from the prediction.
4. `is_equal`: equal after removing spaces; else tuples/lists evaluated element-wise; else the two parsed with
   latex2sympy are equal, or their numeric values differ by less than 0.01 (an *absolute* tolerance: 0.004 equals
   0, 1234.005 equals 1234.01).

Two deliberate differences, both to run safely on model output: the parser is ``latex2sympy2_extended`` (the
maintained fork math-verify uses; MathCoder used ``latex2sympy2``, which pins an old antlr), and numbers are valued
with sympy's ``evalf`` where MathCoder ran Python's ``eval`` on the printed expression. Scoring runs in the answer
checker's worker processes with a per-pair deadline (`mathgenie.answers.check_batch` with ``check=``), since a
pathological answer (``10^{10^{10}}``) can keep sympy busy for ever.
"""

from __future__ import annotations

import re

__all__ = ["completion", "find_math_answer", "gsm8k_equal", "is_equal", "mathcoder_equal"]

TOLERANCE = 1e-2

# MathCoder's `strip_units` list, in its order. The adjacent literals 'kb/h' 'slices' concatenate into one entry, and
# the empty entries make `x^2`/`x^3` lose their exponent: both as in the original.
_UNITS = ["cookies", "screws", "square", "degree", "pints", "mb/h", "mb/s", "kb/hslices", "oranges", "persecond",
          "ies/hour", "eephants/hour", "liters", "sq.ft.", "inches", "hours", "feet", "minutes", "seconds", "cents",
          "mph", "meters", "yearsod", "rams", "centimeters", "kiorams", "years", "weeks", "miesperhour", "miles",
          "units", "km", "mm", "ms", "am", "mbperhour", "mg", "kg", "", "cm", "€", "ml", "pm", "gb", ""]
_BRACED_UNITS = ["m", "p", "g", "l", "s", "ft"]


def completion(blocks) -> str:
    """What MathCoder scores: the content of the solution's last block ('' for an empty solution)."""
    return blocks[-1]["content"] if blocks else ""


# ---------------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------------


def _braced_sqrt(s: str) -> str:
    """``\\sqrt2`` → ``\\sqrt{2}`` (one-character arguments only)."""
    head, *rest = s.split("\\sqrt")
    return head + "".join("\\sqrt" + (p if not p or p[0] == "{" else "{" + p[0] + "}" + p[1:]) for p in rest)


def _braced_fracs(s: str) -> str:
    """``\\frac12`` → ``\\frac{1}{2}``, ``\\frac1{2}`` → ``\\frac{1}{2}``; a too-short ``\\frac`` leaves
    ``s`` as is."""
    head, *rest = s.split("\\frac")
    out = head
    for p in rest:
        out += "\\frac"
        if p.startswith("{"):
            out += p
            continue
        if len(p) < 2:
            return s
        num, den, tail = p[0], p[1], p[2:]
        out += "{" + num + "}" + (den + tail if den == "{" else "{" + den + "}" + tail)
    return out


def _slash_to_frac(s: str) -> str:
    """``3/4`` (two plain integers) → ``\\frac{3}{4}``."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        num, den = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    return f"\\frac{{{num}}}{{{den}}}" if s == f"{num}/{den}" else s


def _strip_string(s: str) -> str:
    for old, new in (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"),
                     ("\\left", ""), ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""), ("$", "")):
        s = s.replace(old, new)
    s = s.split("\\text{ ")[0]  # units written as `\text{ cm}` on the right
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if s.count("=") == 1:
        s = s.split("=")[-1]
    if s.count("\\approx") == 1:
        s = s.split("\\approx")[-1]
    if "sqrt" in s:
        s = _braced_sqrt(s)
    s = s.replace(" ", "")
    if "sqrt" in s:  # MathCoder fixes fractions only here
        s = _braced_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def _strip_units(s: str) -> str:
    for unit in _UNITS:
        s = s.replace(f"{unit}^3", "").replace(f"{unit}^2", "").replace(unit, "")
        s = s.replace("{}^3", "").replace("{}^2", "").replace("{}", "")
    for unit in _BRACED_UNITS:
        s = s.replace(f"{{{unit}}}^3", "").replace(f"{{{unit}}}^2", "").replace(f"{{{unit}}}", "")
    return s.replace("ft^3", "").replace("ft^2", "")


_BOXED = re.compile(r"oxed{(.*)}", re.DOTALL)


def find_math_answer(text: str) -> str:
    """MathCoder's normalized final answer of ``text`` (a reference answer or a prediction)."""
    s = text.lower().split(" is ")[-1].replace("{}", "")
    boxed = _BOXED.findall(s)
    ans = boxed[-1] if boxed else s
    close, open_ = ans.find("}"), ans.find("{")
    if close != -1 and (open_ == -1 or close < open_):
        ans = ans.split("}")[0]
    ans = ans.split("=")[-1].split("\\approx")[-1]
    for old, new in (("answer:", ""), ("∞", "\\infty"), ("+\\infty", "\\infty"), ("\\\\", "\\"), ("\n", ""),
                     ("\\text", ""), ("\\mbox", ""), ("bmatrix", "pmatrix")):
        ans = ans.replace(old, new)
    ans = ans.split("\\)")[0].split("\\]")[0].split("\\(")[-1].split("\\[")[-1].replace("..</s>", "")
    return _strip_units(_strip_string(ans))


# ---------------------------------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------------------------------


def _parse(s: str):
    from latex2sympy2_extended import latex2sympy

    return latex2sympy(s)


def _number(expr) -> float:
    """The value of a sympy expression (raises when it has free symbols or is not a real number)."""
    value = complex(expr.evalf())
    if value.imag:
        raise ValueError(f"{expr} is not real")
    return value.real


def _value_text(sub: str) -> str:
    """What MathCoder writes for one tuple element, ``str(eval(str(latex2sympy(sub))))``: an integer as such, any
    other number as a float (latex2sympy2_extended leaves ``5+2`` unevaluated, hence ``doit``)."""
    expr = _parse(sub).doit()
    return str(int(expr)) if getattr(expr, "is_Integer", False) else str(_number(expr))


def _eval_tuple(s: str) -> str:
    """``(2*3,5+2)`` → ``(6,7.0)``-style text with each element valued; anything else (or an error) unchanged."""
    items = s[1:-1].split(",")
    if len(s) < 2 or len(items) < 2 or (s[0], s[-1]) not in (("(", ")"), ("[", "]")):
        return s
    try:
        values = [sub if "infty" in sub or sub in ("a", "-a") else _value_text(sub) for sub in items]
    except Exception:
        return s
    return s[0] + ",".join(values) + s[-1]


def is_equal(prediction: str, reference: str) -> bool:
    """MathCoder's `is_equal` on two `find_math_answer` outputs (symmetric)."""
    a, b = prediction.lower().replace(" ", ""), reference.lower().replace(" ", "")
    if not a or not b:
        return False
    if a == b:
        return True
    a, b = _eval_tuple(a), _eval_tuple(b)
    if a == b:
        return True
    try:
        x, y = _parse(b), _parse(a)
        if x == y:
            return True
        return abs(_number(x) - _number(y)) < TOLERANCE
    except Exception:  # unparsable, symbolic, sets: MathCoder's bare `except: pass`
        return False


def mathcoder_equal(prediction: str, reference: str, *, gsm8k: bool = False) -> bool:
    """Whether MathCoder's harness counts ``prediction`` (the last block's content) right against ``reference``."""
    pred, gold = find_math_answer(prediction), find_math_answer(str(reference))
    if gsm8k:
        pred = re.sub(r"[a-zA-Z]", "", pred)
    return is_equal(pred, gold)


def gsm8k_equal(prediction: str, reference: str) -> bool:
    return mathcoder_equal(prediction, reference, gsm8k=True)
