"""Child processes that never outlive the process that started them, and the signals that stop a command."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

__all__ = ["STOP_SIGNALS", "die_with_parent", "on_stop_signals", "stop_processes"]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


def die_with_parent() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when its parent dies (kill -9 too)."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def on_stop_signals(callback: Callable[[signal.Signals], None]) -> None:
    """Call ``callback(sig)`` on the running loop for SIGINT and SIGTERM.

    Explicit handlers, so a command stops the same way however it was started: a shell starts a
    background job (``trigreason up &``) with SIGINT ignored, and asyncio only installs its own Ctrl-C
    handler where SIGINT has Python's default one. ``add_signal_handler`` replaces an inherited SIG_IGN."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or Windows
            loop.add_signal_handler(sig, callback, sig)


async def stop_processes(procs: Sequence[subprocess.Popen[bytes]], *, timeout_s: float = 3.0) -> None:
    """SIGTERM to every process still running, then SIGKILL to those still there after ``timeout_s``;
    returns once all of them have exited (and been reaped)."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    deadline = time.monotonic() + timeout_s
    while any(p.poll() is None for p in running) and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a Popen
        await asyncio.sleep(0.05)
    for proc in running:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    deadline = time.monotonic() + 5.0  # SIGKILL cannot be ignored: this only waits for the kernel
    while any(p.poll() is None for p in running) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
