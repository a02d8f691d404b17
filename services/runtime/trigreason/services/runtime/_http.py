"""Serving an aiohttp application: the one ``start_server`` of the CPU inference server and the simulator,
and stopping one within a bound (aiohttp waits up to 60 s for open requests by default)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["cleanup_within", "start_server"]


async def start_server(app: web.Application, *, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (0: any free port); returns the runner (``cleanup()`` stops it) and
    the base URL. A handler is cancelled when its client disconnects, which lets a generation stop early
    and free its slot."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    return runner, f"http://{host}:{bound}"


async def cleanup_within(runner: web.BaseRunner, timeout_s: float) -> None:
    """``runner.cleanup()``, with open requests given ``timeout_s`` to finish before they are cancelled
    (aiohttp waits as long again for the cancellation); the app's cleanup hooks run after, as usual."""
    for site in list(runner.sites):
        await site.stop()  # no new connections
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections close
        await runner.server.shutdown(timeout_s)  # what is left is cancelled after timeout_s
    await runner.cleanup()  # on_shutdown and on_cleanup hooks; no connection is left to wait for
