"""The WAN emulator's admin endpoint (HTTP, localhost by default): read and change the link at run time.

- ``GET /wan`` — settings, counters and routes (with their bound ports);
- ``PATCH /wan`` (or ``POST``) with a JSON object of settings to change, e.g. ``{"rtt_ms": 150}``;
- ``POST /wan/partition`` cuts the link (body optional: ``{"mode": "blackhole" | "reset"}``);
- ``DELETE /wan/partition`` heals it.
Every answer is the new state; bad input is a JSON ``{"error": {"code", "message"}}`` with a 4xx status and
changes nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from trigreason.services.runtime import start_server

from ._proxy import WanEmulator

__all__ = ["start_admin"]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        return _error(400, "invalid_json", f"the body is not JSON: {exc}")
    if not isinstance(doc, dict):
        return _error(422, "invalid_settings", "the body must be a JSON object of settings")
    return doc


def _app(wan: WanEmulator) -> web.Application:
    async def state(_: web.Request) -> web.Response:
        return web.json_response(wan.state())

    async def change(request: web.Request) -> web.Response:
        doc = await _body(request)
        if isinstance(doc, web.Response):
            return doc
        try:
            wan.configure(**doc)
        except (ValueError, TypeError, msgspec.ValidationError) as exc:
            return _error(422, "invalid_settings", str(exc))
        return web.json_response(wan.state())

    async def cut(request: web.Request) -> web.Response:
        doc = await _body(request)
        if isinstance(doc, web.Response):
            return doc
        if set(doc) - {"mode"}:
            return _error(422, "invalid_settings", 'the body may only name "mode"')
        try:
            wan.partition(True, doc.get("mode"))
        except (ValueError, TypeError, msgspec.ValidationError) as exc:
            return _error(422, "invalid_settings", str(exc))
        return web.json_response(wan.state())

    async def heal(_: web.Request) -> web.Response:
        wan.partition(False)
        return web.json_response(wan.state())

    app = web.Application()
    app.router.add_get("/wan", state)
    app.router.add_patch("/wan", change)
    app.router.add_post("/wan", change)
    app.router.add_post("/wan/partition", cut)
    app.router.add_delete("/wan/partition", heal)
    return app


async def start_admin(
    wan: WanEmulator, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve ``wan``'s admin endpoint; returns the runner (``cleanup()`` stops it) and its base URL."""
    return await start_server(_app(wan), host=host, port=port)
