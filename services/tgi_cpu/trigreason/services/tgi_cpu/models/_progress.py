"""Progress of one model's provisioning: a rich bar (bytes) on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Protocol

import structlog

__all__ = ["Reporter", "make_reporter"]


class Reporter(Protocol):
    def phase(self, label: str, total: int | None) -> None:
        """Start a new stretch of work of ``total`` bytes (the bar restarts)."""

    def advance(self, n: int) -> None: ...

    def note(self, message: str) -> None:
        """What is happening now (the bar's label; a log line without a bar)."""

    def __enter__(self) -> Reporter: ...

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _Lines:
    """Log lines at each phase and every quarter of it: readable in CI logs and server logs alike."""

    def __init__(self, model: str) -> None:
        # Unconfigured structlog prints to stdout, where a CLI's real output goes: use stderr then.
        base = (
            structlog.get_logger("trigreason.models")
            if structlog.is_configured()
            else structlog.wrap_logger(structlog.PrintLogger(sys.stderr))
        )
        self._log = base.bind(model=model)
        self._label, self._total, self._done, self._next = "", 0, 0, 0.25
        self._started = time.monotonic()

    def __enter__(self) -> _Lines:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            self._log.info("model ready", seconds=round(time.monotonic() - self._started, 1))

    def phase(self, label: str, total: int | None) -> None:
        self._label, self._total, self._done, self._next = label, total or 0, 0, 0.25
        self._log.info(label, mb=round(total / 1e6, 1) if total else None)

    def advance(self, n: int) -> None:
        self._done += n
        if self._total and self._done / self._total >= self._next and self._next < 1:
            self._log.info(f"{self._label}: {self._next:.0%}")
            self._next += 0.25

    def note(self, message: str) -> None:
        self._log.info(message)


class _Bar:
    def __init__(self, model: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._model = model
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(model, total=None)

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def phase(self, label: str, total: int | None) -> None:
        self._progress.update(self._task, description=f"{self._model}: {label}", total=total, completed=0)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def note(self, message: str) -> None:
        self._progress.update(self._task, description=f"{self._model}: {message}")


def make_reporter(model: str, progress: bool | None) -> Reporter:
    """``progress`` None: a bar when stderr is a terminal; True: always a bar; False: log lines."""
    bar = sys.stderr.isatty() if progress is None else progress
    return _Bar(model) if bar else _Lines(model)
