"""``GET /v1/sessions/{id}/events``: a session's events as Server-Sent Events, from the start or after
``Last-Event-ID``, until its terminal event; keep-alive comments while nothing happens."""

from __future__ import annotations

import contextlib

import structlog
from aiohttp import web

from trigreason.services.runtime import Bus

from ._feed import ClientGone, Feed, Seen, Writer, next_event

__all__ = ["stream_events"]

log = structlog.get_logger("trigreason.gateway")


async def stream_events(
    bus: Bus, request: web.Request, session_id: str, *, after: int, keepalive_s: float
) -> web.StreamResponse:
    """Each event once (the SSE id is its stream sequence); events up to ``after`` are only read."""
    async with Feed(bus, session_id) as feed:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        out = Writer(request, resp)
        seen = Seen()
        try:
            while True:
                ev = await next_event(feed, out, keepalive_s=keepalive_s)
                # Events up to Last-Event-ID are only read: the client has them, and what they committed
                # must not come again under another id.
                if seen.fresh(ev) and ev.seq > after:
                    await out.write(f"id: {ev.seq}\nevent: {ev.kind}\ndata: ".encode() + ev.data + b"\n\n")
                if seen.ended:
                    break
        except ClientGone:
            return resp
        except Exception:  # the stream has begun: end it; the client resumes with Last-Event-ID
            log.exception("event_stream_failed", session_id=session_id)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp
