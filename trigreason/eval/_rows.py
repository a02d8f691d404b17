"""The rows of ``results.jsonl``: one per (problem, policy, sample), typed, read back as written."""

from __future__ import annotations

from pathlib import Path

import msgspec

from trigreason.proto import ConfigError, SessionParams, SessionStats

__all__ = ["Row", "StepRow", "read_rows", "write_json"]


class StepRow(msgspec.Struct, kw_only=True, frozen=True):
    """One committed step of a run. Role and trigger stay plain strings: a policy added later may bring
    its own trigger kind, and old rows must still read."""

    index: int
    role: str
    text: str
    tokens: int
    trigger: str | None = None


class Row(msgspec.Struct, kw_only=True, frozen=True):
    """One run: what was asked, what came back, how it was graded, what it cost, every step. The field
    order is the order of the keys in ``results.jsonl``."""

    problem_id: str
    policy: str
    sample: int = 0
    seed: int = 0
    question: str = ""
    gold: str = ""
    answer: str | None = None
    correct: bool = False
    end_reason: str = ""
    failed: bool = False
    error: str | None = None
    session_id: str = ""
    run_s: float = 0.0
    params: SessionParams = SessionParams()
    stats: SessionStats = SessionStats()
    steps: list[StepRow] = []


_decoder = msgspec.json.Decoder()


def read_rows(path: Path) -> list[Row]:
    """The rows already written; a line cut off by a crash is dropped (and its run redone). A line that is
    JSON but not a row is an error naming the line: nothing is dropped silently."""
    rows: list[Row] = []
    if not path.exists():
        return rows
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            raw = _decoder.decode(line)
        except msgspec.DecodeError:
            continue  # torn by a crash mid-write
        try:
            rows.append(msgspec.convert(raw, Row))
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{path} line {number}: not a result row ({exc})") from exc
    return rows


def write_json(path: Path, doc: object) -> None:
    """``doc`` (Structs, dataclasses, builtins) as indented JSON, replacing ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n")
    tmp.replace(path)
