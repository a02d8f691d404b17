"""Final-answer extraction: the last ``\\boxed{...}`` with brace matching."""

from __future__ import annotations

__all__ = ["extract_boxed"]

_MARKERS = ("\\boxed{", "\\fbox{")


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces matched.

    An unclosed box (the model was cut off) does not count; an earlier complete one then wins.
    """
    best: tuple[int, str] | None = None
    for marker in _MARKERS:
        start = text.rfind(marker)
        while start != -1:
            content = _balanced(text, start + len(marker))
            if content is not None:
                if best is None or start > best[0]:
                    best = (start, content.strip())
                break
            start = text.rfind(marker, 0, start)
    return None if best is None else best[1]


def _balanced(text: str, pos: int) -> str | None:
    depth = 1
    i = pos
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            i += 2  # an escaped brace (\{ or \}) does not open or close
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[pos:i]
        i += 1
    return None
