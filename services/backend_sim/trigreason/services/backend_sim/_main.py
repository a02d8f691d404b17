"""The load simulator speaking TGI's protocol as a process: ``main`` is its image's entry point (``python -m
trigreason.services.backend_sim``) and what ``trigreason serve backend-sim`` calls. Configured from the
environment (``TRIGREASON_SIM_<SETTING>``, e.g. ``TRIGREASON_SIM_PORT``, ``TRIGREASON_SIM_STEP_TOKENS``;
``TRIGREASON_LOG_LEVEL``), flags override it. Benchmarks of the bus only: its text is not a model's.

A bad setting or a port that is taken is one line on stderr and exit status 2; SIGTERM and SIGINT stop it
within a few seconds."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

import structlog

from trigreason.proto import ConfigError, TrigReasonError
from trigreason.services.runtime import cleanup_within, configure_logging, run_event_loop, start_server

from ._server import make_app
from ._settings import SimSettings

__all__ = ["main"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# After a stop, open requests (a stream mid-generation) get this long, then are cancelled.
_CLOSE_S = 1.5


def main(env: Mapping[str, str] | None = None, **overrides: Any) -> int:
    """Serve until SIGTERM or SIGINT; ``overrides`` are ``SimSettings`` fields (flags). Returns the exit
    status: 0 after a stop, 2 after a bad setting or a port that is taken."""
    env = dict(os.environ if env is None else env)
    level = env.get("TRIGREASON_LOG_LEVEL", "INFO").upper()
    if level not in _LEVELS:
        print(f"error: TRIGREASON_LOG_LEVEL={level!r}: use {', '.join(_LEVELS)}", file=sys.stderr)
        return 2
    try:
        # Settings first: a bad one is reported before logging or signals are set up (nothing to undo).
        settings = SimSettings.from_env(env, **overrides)
        configure_logging(service="backend-sim", level=level)
        run_event_loop(lambda: _serve(settings), env=env)
    except TrigReasonError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


async def _serve(settings: SimSettings) -> None:
    log = structlog.get_logger("trigreason.backend_sim").bind(service="backend-sim")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        runner, url = await start_server(make_app(settings), host=settings.host, port=settings.port)
    except OSError as exc:  # e.g. the port is taken
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
    log.info(
        f"backend simulator listening on {url}",
        url=url,
        time_per_token_ms=settings.time_per_token_ms,
        step_tokens=str(settings.step_tokens),
        concurrency=settings.concurrency,
        error_rate=settings.error_rate,
        seed=settings.seed,
    )
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await cleanup_within(runner, _CLOSE_S)
