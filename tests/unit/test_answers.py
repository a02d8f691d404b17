import pytest

from trigreason.services.orchestrator import extract_boxed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{2}", "2"),  # the last one
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{ 7 }", "7"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not close
        ("\\boxed{3} and then \\boxed{4", "3"),  # an unclosed box is cut-off output: the earlier one wins
        ("no answer here", None),
        ("\\boxed{", None),
        ("\\fbox{9}", "9"),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected
