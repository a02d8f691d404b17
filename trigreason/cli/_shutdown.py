"""Stopping an aiohttp server within a bound: aiohttp waits up to 60 s for open requests by default."""

from __future__ import annotations

from aiohttp import web

__all__ = ["cleanup_within"]


async def cleanup_within(runner: web.BaseRunner, timeout_s: float) -> None:
    """``runner.cleanup()``, with open requests given ``timeout_s`` to finish before they are cancelled
    (aiohttp waits as long again for the cancellation); the app's cleanup hooks run after, as usual."""
    for site in list(runner.sites):
        await site.stop()  # no new connections
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections close
        await runner.server.shutdown(timeout_s)  # what is left is cancelled after timeout_s
    await runner.cleanup()  # on_shutdown and on_cleanup hooks; no connection is left to wait for
