"""Final-answer extraction and equivalence for GSM8K/MATH-style answers.

>>> from mathgenie.answers import extract_answer, is_equivalent, check_batch
>>> extract_answer("... so the answer is $\\boxed{\\dfrac{1}{2}}$.")
'\\dfrac{1}{2}'
>>> is_equivalent("0.5", "\\frac{1}{2}")
True

`is_equivalent` and `check_batch` decide most pairs with exact string/number comparisons in this process and send
the rest to math-verify in worker processes with a per-item deadline (see `compare` and `pool`).
"""

from mathgenie.answers.check import check_batch, is_equivalent
from mathgenie.answers.compare import fast_verdict, math_verify_equal
from mathgenie.answers.extract import extract_answer, extract_lce_answer, last_boxed
from mathgenie.answers.normalize import normalize_answer
from mathgenie.answers.pool import CheckerPool, shutdown

__all__ = [
    "CheckerPool",
    "check_batch",
    "extract_answer",
    "extract_lce_answer",
    "fast_verdict",
    "is_equivalent",
    "last_boxed",
    "math_verify_equal",
    "normalize_answer",
    "shutdown",
]
