"""Answer grading: numeric comparison for GSM8K and AIME, math-verify for everything else.

Numbers are compared as numbers (``025`` equals ``25``, ``1,000`` equals ``1000``, ``$18`` and
``18 \\text{ dollars}`` equal ``18``); anything that is not a plain number goes to math-verify, which
compares symbolically (``\\frac{1}{2}`` equals ``0.5``).
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["grade", "numeric_value"]

_TEXT = re.compile(r"\\(?:text|mathrm|mbox)\{[^{}]*\}")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)$")
_NOISE = re.compile(r"\\[,;!: ]|\\\$|[$%]|\\%|\^\{?\\circ\}?|\\left|\\right|\s+")


def numeric_value(answer: str) -> Fraction | None:
    """The answer as an exact number when it is one, once units, currency and thousands separators go."""
    text = _TEXT.sub("", answer)
    text = _NOISE.sub("", text)
    text = re.sub(r"(?<=\d),(?=\d{3}(?:\D|$))", "", text)  # thousands separators
    text = re.sub(r"[a-zA-Z]+\.?$", "", text)  # a trailing unit word: 18dollars, 5cm
    text = text.strip(".")
    frac = re.fullmatch(r"\\d?frac\{([-+]?\d+)\}\{([-+]?\d+)\}", text)
    if frac is not None and int(frac.group(2)) != 0:
        return Fraction(int(frac.group(1)), int(frac.group(2)))
    if _NUMBER.match(text):
        return Fraction(text)
    return None


def grade(answer: str | None, gold: str, *, kind: str = "math") -> bool:
    """Whether ``answer`` (the content of the model's last ``\\boxed{}``) equals ``gold``."""
    if answer is None or not answer.strip():
        return False
    if kind == "numeric":
        want, got = numeric_value(gold), numeric_value(answer)
        if want is not None and got is not None:
            return want == got
    return _math_verify(answer, gold)


def _math_verify(answer: str, gold: str) -> bool:
    from math_verify import parse, verify  # heavy import (sympy): only when grading needs it

    # math-verify bounds its work with SIGALRM timeouts, so grading runs on the main thread.
    gold_parsed = parse(f"\\boxed{{{gold}}}")
    answer_parsed = parse(f"\\boxed{{{answer}}}")
    if not gold_parsed or not answer_parsed:
        return answer.strip() == gold.strip()
    return bool(verify(gold_parsed, answer_parsed))
