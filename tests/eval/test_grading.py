"""Grading on known equivalent and non-equivalent answers."""

from __future__ import annotations

from fractions import Fraction

import pytest

from trigreason.eval import grade, numeric_value


@pytest.mark.parametrize(
    ("answer", "gold", "kind", "expected"),
    [
        ("\\frac{1}{2}", "0.5", "math", True),
        ("0.5", "\\frac{1}{2}", "math", True),
        ("\\frac{1}{2}", "0.5", "numeric", True),
        ("25", "025", "numeric", True),  # AIME answers are zero-padded
        ("025", "25", "numeric", True),
        ("18 \\text{ dollars}", "18", "numeric", True),  # units
        ("\\$18", "18", "numeric", True),
        ("$18.00", "18", "numeric", True),
        ("5 cm", "5", "numeric", True),
        ("1,000", "1000", "numeric", True),  # a thousands separator, not a pair
        ("50\\%", "50", "numeric", True),
        ("17", "18", "numeric", False),
        ("180", "18", "numeric", False),
        ("-3", "3", "numeric", False),
        ("\\frac{1}{3}", "0.33", "numeric", False),
        ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", "math", True),
        ("\\frac{\\pi}{2}", "\\pi/2", "math", True),
        ("x+1", "1+x", "math", True),
        ("x+2", "x+1", "math", False),
        ("1/4", "\\frac{1}{2}", "math", False),
        (None, "18", "numeric", False),
        ("", "18", "numeric", False),
    ],
)
def test_grade(answer: str | None, gold: str, kind: str, expected: bool) -> None:
    assert grade(answer, gold, kind=kind) is expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", Fraction(42)),
        ("0.25", Fraction(1, 4)),
        ("\\dfrac{3}{4}", Fraction(3, 4)),
        ("12,345", Fraction(12345)),
        ("7 \\text{ apples}", Fraction(7)),
        ("x + 1", None),
        ("(1, 2)", None),
    ],
)
def test_numeric_value(text: str, value: Fraction | None) -> None:
    assert numeric_value(text) == value
