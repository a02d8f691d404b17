"""Serving an aiohttp application: the one ``start_server`` of the CPU inference server and the simulator."""

from __future__ import annotations

from aiohttp import web

__all__ = ["start_server"]


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
