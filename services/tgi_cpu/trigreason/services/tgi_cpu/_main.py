"""The CPU inference server as a process: ``main`` is its image's entry point (``python -m
trigreason.services.tgi_cpu``) and what ``trigreason serve tgi-cpu`` calls. Configured from the environment
(``TRIGREASON_TGI_CPU_*``: model, host, port, ctx, threads, max_queue, cache_slots, ...;
``TRIGREASON_MODEL_DIR`` for the model cache; ``TRIGREASON_LOG_LEVEL``), flags override it. The model
(tiny, srm, lrm, a GGUF path or hf://REPO/FILE) is fetched and verified first if it is not cached.

A bad setting, a model that cannot be fetched or loaded, or a port that is taken is one line on stderr and
exit status 2. SIGTERM and SIGINT stop it within a few seconds, also while the model is being fetched."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from trigreason.proto import ConfigError, TrigReasonError
from trigreason.services.runtime import cleanup_within, configure_logging, run_event_loop, start_server

from ._engine import LlamaEngine
from ._model_ref import resolve_model_path
from ._server import make_app
from ._settings import TgiCpuSettings

__all__ = ["main"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# After a stop, open requests (a stream mid-generation) get this long, then are cancelled (at their next
# token) rather than run to their end.
_CLOSE_S = 1.5


class _Stopped(Exception):
    """SIGTERM or SIGINT before the server is up (fetching or loading the model)."""


def _stop_now(signum: int, _frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


def main(env: Mapping[str, str] | None = None, **overrides: Any) -> int:
    """Serve until SIGTERM or SIGINT; ``overrides`` are ``TgiCpuSettings`` fields (flags). Returns the exit
    status: 0 after a stop, 2 after a bad setting or a model that cannot be fetched or loaded."""
    env = dict(os.environ if env is None else env)
    level = env.get("TRIGREASON_LOG_LEVEL", "INFO").upper()
    if level not in _LEVELS:
        print(f"error: TRIGREASON_LOG_LEVEL={level!r}: use {', '.join(_LEVELS)}", file=sys.stderr)
        return 2
    try:
        # Settings first: a bad one is reported before logging or signals are set up (nothing to undo).
        settings = TgiCpuSettings.from_env(env, **overrides)
    except TrigReasonError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(service="tgi-cpu", level=level)
    log = structlog.get_logger("trigreason.tgi_cpu").bind(service="tgi-cpu")
    # As PID 1 in a container a signal without a handler does nothing: until the event loop takes over,
    # SIGTERM and SIGINT end the fetch or load with _Stopped.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_now)
    engine: LlamaEngine | None = None
    try:
        log.info("resolving model", model=settings.model)
        path = resolve_model_path(settings.model)
        model_id = path.name if Path(settings.model).expanduser().is_file() else settings.model
        log.info("loading model", path=str(path), size_mb=round(path.stat().st_size / 2**20, 1))
        started = time.perf_counter()
        engine = LlamaEngine(
            path,
            n_ctx=settings.ctx,
            n_threads=settings.threads,
            n_batch=settings.batch,
            prefix_reuse=settings.prefix_reuse,
            cache_slots=settings.cache_slots,
            model_id=model_id,
        )
        log.info(
            "model loaded",
            model_id=engine.model_id,
            seconds=round(time.perf_counter() - started, 2),
            n_vocab=engine.n_vocab,
            n_ctx=engine.n_ctx,
            threads=engine.n_threads,
            cache_slots=engine.cache_slots,
        )
        run_event_loop(lambda: _serve(engine, settings, log), env=env)
    except _Stopped as exc:
        log.info("stopped before serving", signal=str(exc))
        return 0
    except TrigReasonError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an image (or venv) without the `llama` extra
        print(
            f"error: llama.cpp is not installed ({exc.name}): install trigreason-tgi-cpu[llama]",
            file=sys.stderr,
        )
        return 2
    except ValueError as exc:  # llama.cpp could not load the file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            engine.close()
    return 0


async def _serve(engine: LlamaEngine, settings: TgiCpuSettings, log: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        runner, url = await start_server(make_app(engine, settings), host=settings.host, port=settings.port)
    except OSError as exc:  # e.g. the port is taken
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
    log.info(f"listening on {url}", url=url, max_queue=settings.max_queue)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await cleanup_within(runner, _CLOSE_S)
