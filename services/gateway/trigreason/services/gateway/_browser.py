"""The session browser: static pages served from the package (``static/``), and the two JSON routes they
read besides the session API.

- ``GET /`` (``index.html``): the recent sessions and a form that starts one (``POST /v1/sessions``).
- ``GET /sessions/{session_id}`` (``session.html``): one session, live, from ``GET /v1/sessions/{id}/events``
  (read with ``fetch`` streaming, so the bearer token goes in the Authorization header; resumed with
  Last-Event-ID after a reconnect).
- ``GET /static/{name}``: the pages' CSS and JS. No build step, nothing fetched from elsewhere.
- ``GET /v1/sessions``: the recent sessions (below) and what the form needs (policies, default parameters,
  the trace URL template).
- ``GET /v1/sessions/{session_id}/trace``: the session's trace id (from the ``traceparent`` header of its
  request on the event stream) and its URL in a trace UI when ``TRIGREASON_TRACE_URL_TEMPLATE`` is set.

The pages themselves need no token (they hold no data); what they read is under ``/v1/`` and needs one
where auth is on. The page asks for it once and keeps it in ``sessionStorage``.

The recent sessions: each gateway keeps an index of the last ``browser_sessions`` requests in memory, fed by
an ordered consumer on ``trig.evt.*.requested`` (from the stream's start: the index holds the newest after
catching up, whichever replica took the request). A listing then asks JetStream for each listed session's
last finished, failed or other event (a direct get per subject, no reading of whole sessions): the status,
and the SRM token ratio of ended sessions (``null`` while one runs).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import msgspec
import nats.errors
import structlog
from aiohttp import web
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from trigreason.proto import (
    EVENT_STREAM,
    SessionFailed,
    SessionFinished,
    SessionRequested,
    decode_message,
    event_subject,
)
from trigreason.services.runtime import Bus

from ._http import HttpError, json_response, path_session_id
from ._openapi import ROUTES
from ._patterns import SESSION_LIST_MAX, STATIC_FILES
from ._responses import SessionList, SessionSummary, Trace

__all__ = ["RecentSessions", "install_browser", "trace_id_of"]

log = structlog.get_logger("trigreason.gateway")

_PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _read_static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class _Entry(msgspec.Struct, kw_only=True):
    session_id: str
    question: str
    policy: str
    requested_at: float
    seq: int


def trace_id_of(headers: dict[str, str] | None) -> str | None:
    """The trace id of a W3C ``traceparent`` header (``00-<trace id>-<span id>-<flags>``)."""
    parts = (headers or {}).get("traceparent", "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1]
    return None


class RecentSessions:
    """The last ``size`` session requests on the event stream, newest last."""

    def __init__(self, bus: Bus, size: int) -> None:
        self.bus = bus
        self.entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self.size = size
        self._last = 0
        self._task: asyncio.Task[None] | None = None
        # Checked as well as cancelling: Python 3.11's wait_for (in next_msg) can swallow a cancellation.
        self._stopping = False

    def add(self, entry: _Entry) -> None:
        if entry.session_id in self.entries:
            return
        self.entries[entry.session_id] = entry
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    async def _run(self) -> None:
        while not self._stopping:
            sub = None
            try:
                config = (
                    ConsumerConfig(
                        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._last + 1
                    )
                    if self._last
                    else ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
                )
                sub = await self.bus.js.subscribe(
                    event_subject("*", "requested"), ordered_consumer=True, config=config
                )
                reconnects = self.bus.nc.stats["reconnects"]
                while self.bus.nc.stats["reconnects"] == reconnects and not self._stopping:
                    try:
                        msg = await sub.next_msg(timeout=1.0)
                    except nats.errors.TimeoutError:
                        continue
                    self._last = max(self._last, msg.metadata.sequence.stream)
                    self._take(msg.data, msg.metadata.sequence.stream)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection is down or the stream is gone: try again
                log.info("browser_index_retry", error=repr(exc))
                await asyncio.sleep(1.0)
            finally:
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(sub.unsubscribe(), 2.0)

    def _take(self, data: bytes, seq: int) -> None:
        try:
            ev = decode_message(data)
        except (msgspec.DecodeError, ValueError):
            return
        if isinstance(ev, SessionRequested):
            self.add(
                _Entry(
                    session_id=ev.session_id,
                    question=ev.question,
                    policy=ev.params.policy,
                    requested_at=ev.requested_at,
                    seq=seq,
                )
            )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5.0)

    async def _last_msg(self, subject: str) -> Any:
        try:
            return await self.bus.js.get_last_msg(EVENT_STREAM, subject)
        except NotFoundError:
            return None

    async def status(self, entry: _Entry) -> SessionSummary:
        out = SessionSummary(
            session_id=entry.session_id,
            question=entry.question,
            policy=entry.policy,
            requested_at=entry.requested_at,
            status="queued",
            srm_token_ratio=None,
        )
        for kind in ("finished", "failed"):
            msg = await self._last_msg(event_subject(entry.session_id, kind))
            if msg is None or msg.data is None:
                continue
            with contextlib.suppress(msgspec.DecodeError, ValueError):
                ev = decode_message(msg.data)
                if isinstance(ev, SessionFinished):
                    out.status = "finished"
                elif isinstance(ev, SessionFailed):
                    out.status = "failed"
                else:
                    continue
                out.srm_token_ratio = ev.stats.srm_token_ratio
                return out
        last = await self._last_msg(event_subject(entry.session_id, ">"))
        if last is None:  # expired
            out.status = "expired"
        elif last.seq > entry.seq:
            out.status = "running"
        return out


BROWSER = web.AppKey("browser", RecentSessions)


class _Browser:
    def __init__(self, gateway: Any, recent: RecentSessions) -> None:
        self.gateway = gateway
        self.recent = recent
        self.pages = {"index": _read_static("index.html"), "session": _read_static("session.html")}

    @staticmethod
    def _html(body: bytes) -> web.Response:
        headers = {**_PAGE_HEADERS, "Content-Security-Policy": _CSP}
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)

    async def index(self, _request: web.Request) -> web.Response:
        return self._html(self.pages["index"])

    async def session_page(self, request: web.Request) -> web.Response:
        path_session_id(request)
        return self._html(self.pages["session"])

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise HttpError(404, "not_found", f"no static file {name}")
        return web.Response(
            body=_read_static(name), content_type=STATIC_FILES[name], charset="utf-8", headers=_PAGE_HEADERS
        )

    async def list_sessions(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", "20")
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= SESSION_LIST_MAX:
            raise HttpError(400, "bad_limit", f"limit is an integer from 1 to {SESSION_LIST_MAX}")
        entries = list(self.recent.entries.values())[-int(raw) :][::-1]
        sessions = [await self.recent.status(e) for e in entries]
        settings = self.gateway.settings
        policies = self.gateway.policies
        defaults = policies.flat(policies.session_params(settings.default_params))
        return json_response(
            SessionList(
                sessions=sessions,
                now=time.time(),
                policies=list(policies.names()),
                default_params=defaults,
                # the profile's name, where the settings have one (TRIGREASON_PROFILE)
                profile=settings.profile or None,
                trace_url_template=settings.trace_url_template or None,
            )
        )

    async def trace(self, request: web.Request) -> web.Response:
        session_id = path_session_id(request)
        try:
            msg = await self.gateway.bus.js.get_last_msg(EVENT_STREAM, event_subject(session_id, "requested"))
        except NotFoundError:
            raise HttpError(404, "not_found", f"unknown or expired session {session_id}") from None
        trace_id = trace_id_of(msg.headers)
        template = self.gateway.settings.trace_url_template
        url = template.replace("{trace_id}", trace_id) if template and trace_id else None
        return json_response(Trace(trace_id=trace_id, url=url))


def install_browser(app: web.Application, gateway: Any) -> None:
    """The browser's routes of the route table on ``app``, and the index of recent sessions running while
    the app does."""
    recent = RecentSessions(gateway.bus, gateway.settings.browser_sessions)
    app[BROWSER] = recent
    browser = _Browser(gateway, recent)
    for op in ROUTES:  # the route table: the browser's own routes (the document has them)
        if op.owner == "browser":
            app.router.add_route(op.method, op.path, getattr(browser, op.handler))

    async def index_task(_app: web.Application) -> AsyncIterator[None]:
        recent.start()
        yield
        await recent.stop()

    app.cleanup_ctx.append(index_task)
