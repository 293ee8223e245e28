"""Evaluate one arithmetic answer written in LaTeX or plain text, exactly where possible.

Grammar: numbers, ``+ - * / ^ ** !``, ``\\cdot``, ``\\times``, ``\\div``, implicit products (``2\\sqrt{3}``,
``3(x+1)``), ``\\frac``, ``\\sqrt``/``\\sqrt[n]``, ``\\pi``/``pi``, ``e``, ``\\exp``/``exp()``, ``i`` (and ``I`` in
plain text), ``\\infty``, the trigonometric functions, braces and parentheses, mixed numbers (``2\\frac{1}{2}``), and
single-letter variables, which take fixed irrational values (three different points, for equations).

Rationals stay `fractions.Fraction`; anything else becomes a 60-digit mpmath number. Work is bounded: huge exponents
and factorials raise `Unsupported` instead of computing, so a hostile answer cannot stall the caller.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Union

import mpmath

ctx = mpmath.MPContext()  # our own precision context; the global mpmath.mp is left alone
ctx.dps = 60
MAX_BITS = 60_000  # exact rationals above this size continue as mpmath numbers

Number = Union[Fraction, "mpmath.mpf", "mpmath.mpc"]

_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*|\.\d+)|(\\[a-zA-Z]+|\\[{}])|([a-zA-Z]+)|(\*\*|[-+*/^!(){}\[\],&]))")
_WORDS = {"sqrt", "exp", "pi", "sin", "cos", "tan", "cot", "sec", "csc"}
_TRIG = {"\\sin": "sin", "\\cos": "cos", "\\tan": "tan", "\\cot": "cot", "\\sec": "sec", "\\csc": "csc"}
_LETTERS = "abcdfghjklmnopqrstuvwxyzABCDEFGHJKLMNOPQRSTUVWXYZ"  # not e and i (constants) or I (plain-text i)
# R and r take the same value, as in math-verify (which lowercases symbols): "3R^2" equals "3r^2".
_POINTS = [{c: ctx.mpf(ord(c if c == "E" else c.lower())) / 37 + ctx.sqrt(k + 2) / 10 for c in _LETTERS}
           for k in range(3)]


class Unsupported(Exception):
    """The answer is outside the grammar; math-verify will decide."""


class Undefined(Unsupported):
    """Division by zero: the answer has no value (and so equals no answer that has one)."""


def evaluate(text: str, *, point: int = 0, degrees: bool = False) -> tuple[Number, bool]:
    """(value, uses variables) of ``text``; raises `Unsupported` or `Undefined`. ``degrees``: trig arguments are in
    degrees (the answer was written with ``^\\circ``)."""
    parser = _Parser(text, point, degrees)
    value = parser.expr()
    if parser.i != len(parser.tokens):
        raise Unsupported("trailing tokens")
    return _finite(value), parser.symbolic


def as_mp(x: Number):
    return ctx.mpf(x.numerator) / x.denominator if isinstance(x, Fraction) else x


def _exact(x: Fraction) -> Number:
    if max(x.numerator.bit_length(), x.denominator.bit_length()) > MAX_BITS:
        return as_mp(x)
    return x


def _finite(x):
    if not isinstance(x, Fraction) and (ctx.isnan(x) or ctx.isinf(x)):
        raise Unsupported("not finite")
    return x


class _Parser:
    def __init__(self, text: str, point: int, degrees: bool):
        self.tokens: list[tuple[str, str]] = []
        pos, text = 0, text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise Unsupported(text[pos:])
            num, cmd, word, op = m.groups()
            if word is not None:
                if word in _WORDS:
                    self.tokens.append(("cmd", "\\" + word))
                elif len(word) <= 2:
                    self.tokens.extend(("var", c) for c in word)
                else:
                    raise Unsupported(word)  # a word, not a product of variables
            elif num is not None:
                self.tokens.append(("num", num))
            else:
                self.tokens.append(("cmd", cmd) if cmd is not None else ("op", op))
            pos = m.end()
        self.i = 0
        self.plain = "\\" not in text and "{" not in text
        self.values, self.degrees, self.symbolic = _POINTS[point], degrees, False

    def peek(self, k: int = 0) -> tuple[str | None, str | None]:
        j = self.i + k
        return self.tokens[j] if j < len(self.tokens) else (None, None)

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            raise Unsupported(f"expected {value or kind} at token {self.i}")
        self.i += 1
        return tok

    def expr(self):
        value = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            rhs = self.term()
            value = _add(value, rhs if op == "+" else -rhs)
        return value

    def starts_atom(self) -> bool:
        kind, val = self.peek()
        return kind in ("num", "var") or val in ("(", "{") or (
            kind == "cmd" and (val in ("\\frac", "\\sqrt", "\\pi", "\\exp", "\\infty") or val in _TRIG))

    def term(self):
        value = self.unary()
        while True:
            val = self.peek()[1]
            if val in ("*", "\\cdot", "\\times"):
                self.take()
                value = _mul(value, self.unary())
            elif val in ("/", "\\div"):
                self.take()
                value = _div(value, self.unary())
            elif self.starts_atom():  # implicit multiplication
                value = _mul(value, self.power())
            else:
                return value

    def unary(self):
        if self.peek()[1] in ("-", "+"):
            sign = self.take()[1]
            value = self.unary()
            return -value if sign == "-" else value
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek()[1] in ("^", "**"):
            self.take()
            return _pow(base, self.exponent())
        return base

    def exponent(self):
        if self.peek()[1] == "{":
            return self.group()
        if self.peek()[0] == "num" and not self.plain:
            return self.first_digit()  # LaTeX: x^23 is x^2 * 3
        if self.peek()[1] == "-":
            self.take()
            return -self.power()
        return self.power()

    def first_digit(self) -> Fraction:
        _, num = self.take("num")
        if len(num) > 1:
            self.tokens.insert(self.i, ("num", num[1:]))
        return Fraction(int(num[0]))

    def postfix(self):
        value = self.atom()
        while self.peek()[1] == "!":
            self.take()
            value = _factorial(value)
        return value

    def group(self):
        self.take("op", "{")
        value = self.expr()
        self.take("op", "}")
        return value

    def arg(self):
        """A LaTeX macro argument: ``{...}`` or a single token."""
        if self.peek()[1] == "{":
            return self.group()
        if self.peek()[0] == "num" and not self.plain:
            return self.first_digit()
        return self.atom()

    def atom(self):
        kind, val = self.peek()
        if kind == "num":
            self.take()
            value = Fraction(val)
            if "." not in val and self.peek()[1] == "\\frac" and self.mixed_fraction_follows():
                return value + self.atom()  # 2\frac{1}{2} = 5/2, as in MATH answers
            return value
        if kind == "var":
            self.take()
            if val == "e":
                return ctx.e
            if val == "i" or (val == "I" and self.plain):
                return ctx.mpc(0, 1)
            if val not in self.values:
                raise Unsupported(val)
            self.symbolic = True
            return self.values[val]
        if val == "(":
            self.take()
            value = self.expr()
            self.take("op", ")")
            return value
        if val == "{":
            return self.group()
        if kind == "cmd":
            self.take()
            if val == "\\frac":
                numerator = self.arg()
                return _div(numerator, self.arg())
            if val == "\\sqrt":
                if self.peek()[1] == "[":
                    self.take()
                    index = self.expr()
                    self.take("op", "]")
                    return _root(self.arg(), index)
                return _root(self.paren_or_arg(), Fraction(2))
            if val == "\\exp":
                return _pow(ctx.e, self.paren_or_arg())
            if val == "\\pi":
                return +ctx.pi
            if val in _TRIG:
                return self.trig(_TRIG[val])
        raise Unsupported(repr(val))

    def paren_or_arg(self):
        return self.atom() if self.peek()[1] == "(" else self.arg()

    def trig(self, name: str):
        power = None
        if self.peek()[1] == "^":  # \sin^2 x
            self.take()
            power = self.exponent()
        if self.peek()[1] in ("(", "{"):
            x = self.atom()
        else:  # "\sin 2x": the argument is the implicit product that follows
            x = self.power()
            while self.starts_atom() and self.peek()[1] not in _TRIG:
                x = _mul(x, self.power())
        x = as_mp(x) * (ctx.pi / 180 if self.degrees else 1)
        if abs(x) > 10**6:  # reducing a huge argument mod 2*pi takes mpmath minutes
            raise Unsupported("trigonometric argument too large")
        value = getattr(ctx, name)(x)
        return _pow(value, power) if power is not None else value

    def mixed_fraction_follows(self) -> bool:
        toks = self.tokens[self.i:self.i + 7]
        shape = [t[1] if t[0] != "num" else "N" for t in toks]
        return shape == ["\\frac", "{", "N", "}", "{", "N", "}"] and "." not in toks[2][1] + toks[5][1]


def _add(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _exact(a + b)
    return as_mp(a) + as_mp(b)


def _mul(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _exact(a * b)
    return as_mp(a) * as_mp(b)


def _div(a, b):
    if b == 0:
        raise Undefined("division by zero")
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _exact(a / b)
    return as_mp(a) / as_mp(b)


def _pow(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        if b.denominator == 1:
            if a == 0 and b < 0:
                raise Undefined("division by zero")
            bits = max(a.numerator.bit_length(), a.denominator.bit_length(), 1)
            if abs(b.numerator) * bits <= MAX_BITS:
                return a ** b.numerator
        elif a > 0:
            root = _exact_root(a, b.denominator)
            if root is not None:
                return _pow(root, Fraction(b.numerator))
    base, exponent = as_mp(a), as_mp(b)
    if abs(exponent) > 10**6 and abs(base) != 1:
        raise Unsupported("exponent too large to evaluate")
    return _finite(ctx.power(base, exponent))


def _exact_root(a: Fraction, n: int) -> Fraction | None:
    if n > 64 or a < 0:
        return None
    num, den = _int_root(a.numerator, n), _int_root(a.denominator, n)
    return Fraction(num, den) if num is not None and den is not None else None


def _int_root(x: int, n: int) -> int | None:
    if x.bit_length() > 4 * MAX_BITS or (n != 2 and x >= 2**1000):
        return None
    r = math.isqrt(x) if n == 2 else round(x ** (1.0 / n))
    for c in (r - 1, r, r + 1):
        if c >= 0 and c**n == x:
            return c
    return None


def _root(a, index):
    if isinstance(index, Fraction) and index.denominator == 1 and index > 0:
        n = index.numerator
        if isinstance(a, Fraction):
            if a >= 0:
                r = _exact_root(a, n)
                if r is not None:
                    return r
            elif n % 2 == 1:  # the real odd root of a negative number
                r = _exact_root(-a, n)
                return -r if r is not None else -ctx.root(as_mp(-a), n)
        if n == 2:
            return ctx.sqrt(as_mp(a))
    return _pow(a, _div(Fraction(1), index))


def _factorial(a):
    if not (isinstance(a, Fraction) and a.denominator == 1 and a >= 0):
        raise Unsupported("factorial of a non-integer")
    n = a.numerator
    if n <= 3000:
        return _exact(Fraction(math.factorial(n)))
    if n <= 10**7:
        return ctx.factorial(n)
    raise Unsupported("factorial too large")
