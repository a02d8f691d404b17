"""Stopping within a bound what by default may take long: an aiohttp server (up to 60 s for open
requests) and the tracer provider (an OTLP exporter retries an unreachable collector for about 10 s)."""

from __future__ import annotations

import atexit
import threading

from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

__all__ = ["cleanup_within", "shutdown_tracing"]

_TRACING_SHUTDOWN_S = 1.5


async def cleanup_within(runner: web.BaseRunner, timeout_s: float) -> None:
    """``runner.cleanup()``, with open requests given ``timeout_s`` to finish before they are cancelled
    (aiohttp waits as long again for the cancellation); the app's cleanup hooks run after, as usual."""
    for site in list(runner.sites):
        await site.stop()  # no new connections
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections close
        await runner.server.shutdown(timeout_s)  # what is left is cancelled after timeout_s
    await runner.cleanup()  # on_shutdown and on_cleanup hooks; no connection is left to wait for


def shutdown_tracing(provider: TracerProvider, timeout_s: float = _TRACING_SHUTDOWN_S) -> None:
    """``provider.shutdown()`` (exports the spans still buffered), given at most ``timeout_s``: spans that
    an unreachable collector would not take by then are dropped rather than hold up the exit."""
    worker = threading.Thread(target=provider.shutdown, name="tracing-shutdown", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():  # not again at exit (the provider registers its shutdown with atexit)
        atexit.unregister(provider.shutdown)
