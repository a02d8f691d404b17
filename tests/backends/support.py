"""Servers on free loopback ports for the backend tests: the simulator and tiny protocol fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from trigreason.services.backend_sim import SimSettings, make_app, start_server
from trigreason.services.worker.backends import BackendSettings

__all__ = ["fast_retries", "serve_app", "serve_sim"]


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """``async with serve_app(app) as url``: ``app`` on 127.0.0.1, any free port."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_sim(**overrides: Any) -> AsyncIterator[str]:
    """The load simulator, fast by default (0.2 ms per token, no prefill) unless overridden."""
    values: dict[str, Any] = {"time_per_token_ms": 0.2, "prefill_ms": 0.0, "port": 0}
    values.update(overrides)
    runner, url = await start_server(make_app(SimSettings(**values)), host="127.0.0.1", port=0)
    try:
        yield url
    finally:
        await runner.cleanup()


def fast_retries(**overrides: Any) -> BackendSettings:
    """Adapter settings whose backoff is a few milliseconds, so retry tests stay short."""
    values: dict[str, Any] = {"backoff_base_s": 0.001, "backoff_max_s": 0.005, "timeout_s": 10.0}
    values.update(overrides)
    return BackendSettings(**values)
