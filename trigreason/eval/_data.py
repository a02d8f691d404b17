"""Evaluation problems: the bundled datasets by name, or any JSONL file by path."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec

from trigreason.proto import ConfigError

__all__ = ["DATASETS", "Problem", "load_problems"]

GradeKind = Literal["numeric", "math"]

# name -> (file in trigreason/datasets, how answers are compared)
DATASETS: dict[str, tuple[str, GradeKind]] = {
    "gsm8k": ("gsm8k_test.jsonl", "numeric"),
    "gsm8k-train": ("gsm8k_train.jsonl", "numeric"),
    "math500": ("math500_test.jsonl", "math"),
    "aime24": ("aime24_test.jsonl", "numeric"),
    "aime25": ("aime25_test.jsonl", "numeric"),
}


class _Line(msgspec.Struct, kw_only=True, frozen=True):
    """A dataset line: the fields read (others are ignored); which are required is checked after."""

    question: str | None = None
    problem: str | None = None
    answer: str | int | float | None = None
    grade: str | None = None
    unique_id: str | int | None = None
    id: str | int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    id: str  # stable across runs: the dataset name and the row's own id or line number
    question: str
    gold: str
    grade: GradeKind


def load_problems(dataset: str, *, limit: int | None = None, offset: int = 0) -> list[Problem]:
    """The first ``limit`` problems (after ``offset``) of a bundled dataset or a JSONL file.

    A file's rows need a question (``question`` or ``problem``) and an answer (``answer``; a GSM8K-style
    worked solution ending in ``#### N`` is reduced to ``N``); ``"grade": "math"`` in a row asks for symbolic
    comparison, otherwise answers that are plain numbers are compared numerically.
    """
    if dataset in DATASETS:
        file, kind = DATASETS[dataset]
        text = resources.files("trigreason.datasets").joinpath(file).read_text(encoding="utf-8")
        name = dataset
    else:
        path = Path(dataset)
        if not path.is_file():
            raise ConfigError(f"no dataset {dataset!r}: use one of {', '.join(DATASETS)} or a JSONL path")
        text, kind, name = path.read_text(encoding="utf-8"), "numeric", path.stem
    problems: list[Problem] = []
    for line_no, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        if line_no < offset:
            continue
        if limit is not None and len(problems) >= limit:
            break
        try:
            row = msgspec.json.decode(line, type=_Line)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{name} line {line_no + 1}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{name} line {line_no + 1}: not JSON ({exc})") from exc
        problems.append(_problem(row, name, line_no, kind))
    return problems


def _problem(row: _Line, name: str, line_no: int, kind: GradeKind) -> Problem:
    question = row.question or row.problem
    answer = row.answer
    if question is None or answer is None:
        raise ConfigError(f"{name} line {line_no + 1}: needs 'question' (or 'problem') and 'answer'")
    gold = str(answer)
    if "####" in gold:  # GSM8K: the worked solution ends in "#### <number>"
        gold = gold.rsplit("####", 1)[1].strip().replace(",", "")
    row_kind: GradeKind
    if row.grade is None:
        row_kind = kind
    elif row.grade in ("numeric", "math"):
        row_kind = "math" if row.grade == "math" else "numeric"
    else:
        raise ConfigError(f"{name} line {line_no + 1}: grade must be numeric or math")
    if row_kind == "numeric" and _looks_symbolic(gold):
        row_kind = "math"
    ident = row.unique_id or row.id
    return Problem(
        id=f"{name}/{ident if ident is not None else line_no}", question=question, gold=gold, grade=row_kind
    )


def _looks_symbolic(gold: str) -> bool:
    try:
        float(gold.replace(",", ""))
    except ValueError:
        return True
    return False
