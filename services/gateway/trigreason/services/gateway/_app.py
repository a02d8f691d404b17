"""The HTTP gateway (aiohttp): sessions in, their events out as Server-Sent Events, an OpenAI-compatible
chat endpoint, health, readiness, metrics and the OpenAPI document.

Every answer that is not a 2xx is JSON ``{"error": {"code", "message"}}``: 4xx for the client's mistakes,
503/504 when NATS or the session does not answer, and a JSON 500 only as a last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import nats.errors
import structlog
from aiohttp import web
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyDeletedError, KeyNotFoundError, NotFoundError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from trigreason.proto import (
    EVENT_STREAM,
    ConfigError,
    PolicyName,
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionRequested,
    SessionSnapshot,
    StepCommitted,
    decode_message,
    event_subject,
)
from trigreason.services.orchestrator import session_stats
from trigreason.services.runtime import Bus, env_settings

from ._openapi import (
    IDEMPOTENCY_KEY_PATTERN,
    LAST_EVENT_ID_PATTERN,
    MAX_QUESTION_CHARS,
    NOT_BLANK_PATTERN,
    SESSION_ID_PATTERN,
    openapi_document,
)

__all__ = ["OPEN_STREAMS", "GatewaySettings", "idempotent_session_id", "make_app"]

_TERMINAL = ("finished", "failed")
_RETRY_AFTER_S = 5
_TICK_S = 1.0  # how often a waiting stream looks whether its client is still there
_PROBE_S = 10.0  # how long a feed waits for an event before it asks whether its consumer is still there
_RESUBSCRIBE_S = 30.0  # how long a feed tries to get its subscription back before its stream ends
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_LAST_EVENT_ID = re.compile(LAST_EVENT_ID_PATTERN)
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)
_MAX_EVENT_ID = 2**63 - 1

log = structlog.get_logger("trigreason.gateway")


class GatewaySettings(msgspec.Struct, kw_only=True, frozen=True):
    api_tokens: tuple[str, ...] = ()  # empty: no auth
    session_timeout_s: float = 3600.0  # how long a chat completion (streaming or not) waits for the end
    # Parameters a request does not set come from here first (a profile), then SessionParams' defaults.
    default_params: dict[str, Any] = {}
    # A comment line on an idle event stream this often, so proxies and clients keep it open.
    sse_keepalive_s: float = 15.0
    # Long-lived requests open at once (SSE event streams and chat completions); beyond: 429.
    max_streams: int = 256

    def __post_init__(self) -> None:
        if not self.sse_keepalive_s > 0:
            raise ValueError("sse_keepalive_s must be > 0")
        if self.max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        if not self.session_timeout_s > 0:
            raise ValueError("session_timeout_s must be > 0")

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        load_profile: Callable[[str], dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> GatewaySettings:
        """``TRIGREASON_API_TOKENS``, ``_SESSION_TIMEOUT_S``, ``_SSE_KEEPALIVE_S``, ``_MAX_STREAMS``, and the
        default parameters of ``TRIGREASON_PROFILE``: a profile file, or a name where ``load_profile`` (the
        user-facing package's profile lookup) is given."""
        profile = env.get("TRIGREASON_PROFILE")
        params = (load_profile or profile_file)(profile) if profile else {}
        return env_settings(
            cls,
            env,
            prefix="TRIGREASON_",
            skip=frozenset({"default_params"}),
            overrides={"default_params": params, **overrides},
        )


def profile_file(path: str) -> dict[str, Any]:
    """The parameters of the profile file at ``path`` (``{"params": {...}}``), checked as SessionParams."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"TRIGREASON_PROFILE={path!r}: not a readable profile file ({exc}); the gateway alone reads "
            "profile files, the trigreason package also names"
        ) from exc
    params = doc.get("params") if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        raise ConfigError(f"profile {path}: needs a 'params' object")
    try:
        msgspec.convert(params, SessionParams)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"profile {path}: {exc}") from exc
    return params


def idempotent_session_id(token: str, key: str) -> str:
    """The session id of a request with an ``Idempotency-Key``: the same token and key give the same id."""
    return hashlib.sha256(f"{token}\n{key}".encode()).hexdigest()[:32]


class _SessionBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    question: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_QUESTION_CHARS)]
    policy: PolicyName | None = None
    params: dict[str, Any] = {}


class _ChatMessage(msgspec.Struct, kw_only=True):
    role: str
    content: Annotated[str, msgspec.Meta(max_length=MAX_QUESTION_CHARS)] | None = None


class _ChatExtension(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    policy: PolicyName | None = None
    params: dict[str, Any] = {}


class _ChatBody(msgspec.Struct, kw_only=True):
    messages: Annotated[list[_ChatMessage], msgspec.Meta(min_length=1)]
    model: str = "trigreason"
    stream: bool = False
    trigreason: _ChatExtension = msgspec.field(default_factory=_ChatExtension)


class _Indexed(msgspec.Struct):
    index: int


class HttpError(web.HTTPException):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        super().__init__(
            headers=headers,
            text=json.dumps({"error": {"code": code, "message": message}}),
            content_type="application/json",
        )


class _ClientGone(Exception):
    """The client closed the connection of a long-lived request."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "trigreason_gateway_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.sessions = Counter(
            "trigreason_gateway_sessions", "sessions submitted", ["policy"], registry=self.registry
        )
        self.latency = Histogram(
            "trigreason_gateway_request_seconds", "request latency", ["route"], registry=self.registry
        )
        self.open_streams = Gauge(
            "trigreason_gateway_open_streams",
            "long-lived requests open (SSE event streams and chat completions)",
            registry=self.registry,
        )


class _Streams:
    """The cap on long-lived requests open at once."""

    def __init__(self, limit: int, gauge: Gauge) -> None:
        self.limit = limit
        self.open = 0
        self._gauge = gauge

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.open >= self.limit:
            raise HttpError(
                429,
                "too_many_streams",
                f"{self.limit} streams are open on this gateway; retry later",
                headers={"Retry-After": str(_RETRY_AFTER_S)},
            )
        self.open += 1
        self._gauge.set(self.open)
        try:
            yield
        finally:
            self.open -= 1
            self._gauge.set(self.open)


OPEN_STREAMS = web.AppKey("open_streams", _Streams)


@dataclass(frozen=True, slots=True)
class _Event:
    seq: int  # the event stream's sequence: the SSE id
    kind: str  # the last subject token: requested, committed, finished, failed
    data: bytes


class _Feed:
    """A session's events from the start, read by a task into a queue: a reader can wait with a timeout
    (keep-alives, client checks) without cancelling the subscription.

    The subscription is an ephemeral ordered consumer, which a nats-server restart loses, and nats-py only
    recreates one after two missed idle heartbeats (10 s), and tries once each time. So the feed keeps it
    itself: when the connection has reconnected since it subscribed, or the consumer is not there when
    asked after ``_PROBE_S`` without an event, it subscribes again from the stream sequence after the last
    event it queued; every event is queued once, in order. Past ``_RESUBSCRIBE_S`` without a subscription it
    hands the reader an error: the stream ends and the client resumes with Last-Event-ID."""

    def __init__(self, bus: Bus, session_id: str) -> None:
        self._bus = bus
        self._session_id = session_id
        self._queue: asyncio.Queue[_Event | BaseException] = asyncio.Queue(maxsize=256)
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._last = 0  # the stream sequence of the last event queued
        self._reconnects = 0  # the connection's reconnect count when the subscription was made
        self._checked = 0.0  # monotonic: the last event, subscription or probe

    async def __aenter__(self) -> _Feed:
        await self._subscribe()
        self._task = asyncio.create_task(self._pump())
        return self

    async def _subscribe(self) -> None:
        if self._last:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._last + 1
            )
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        # Read before subscribing: a reconnect while the consumer is made is one more, and is seen.
        self._reconnects = self._bus.nc.stats["reconnects"]
        self._sub = await self._bus.js.subscribe(
            event_subject(self._session_id, ">"), ordered_consumer=True, config=config
        )
        self._checked = time.monotonic()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _lost(self) -> bool:
        """Whether the subscription may have lost its consumer: the connection reconnected since, or the
        consumer does not answer (asked at most every ``_PROBE_S``, only while no event comes)."""
        if self._bus.nc.stats["reconnects"] != self._reconnects:
            return True
        if time.monotonic() - self._checked < _PROBE_S:
            return False
        self._checked = time.monotonic()
        try:
            await self._sub.consumer_info()
        except NotFoundError:
            return True
        except (nats.errors.Error, TimeoutError, ConnectionError):
            return not self._bus.nc.is_connected  # reconnecting: the count tells once it is back
        return False

    async def _resubscribe(self) -> None:
        await self._unsubscribe()
        deadline = time.monotonic() + _RESUBSCRIBE_S
        delay = 0.25
        while True:
            try:
                await self._subscribe()
            except (nats.errors.Error, TimeoutError, ConnectionError) as exc:
                if time.monotonic() + delay >= deadline:
                    raise ConnectionError(
                        f"the event subscription could not be restored within {_RESUBSCRIBE_S:g} s"
                    ) from exc
                log.info("event_resubscribe_retry", session_id=self._session_id, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)
            else:
                log.info("event_resubscribed", session_id=self._session_id, after_seq=self._last)
                return

    async def _pump(self) -> None:
        try:
            while True:
                try:
                    msg = await self._sub.next_msg(timeout=_TICK_S)
                except nats.errors.TimeoutError:
                    if await self._lost():
                        await self._resubscribe()
                    continue
                seq = msg.metadata.sequence.stream
                if seq <= self._last:  # a new consumer's overlap with what was queued
                    continue
                self._last = seq
                self._checked = time.monotonic()
                kind = msg.subject.rsplit(".", 1)[1]
                await self._queue.put(_Event(seq, kind, msg.data))
        except Exception as exc:  # handed to the reader, which ends its stream
            await self._queue.put(exc)

    async def next(self, wait_s: float) -> _Event | None:
        """The next event, or None when none came within ``wait_s`` (the subscription stays)."""
        try:
            item = await asyncio.wait_for(self._queue.get(), wait_s)
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._unsubscribe()


class _Seen:
    """What a reader has passed on: each step index once, one request, and only the first terminal event
    (a redelivery outside JetStream's duplicate window can publish an event twice)."""

    def __init__(self) -> None:
        self.indexes: set[int] = set()
        self.requested = False
        self.ended = False

    def fresh(self, ev: _Event) -> bool:
        if self.ended:
            return False
        if ev.kind == "committed":
            try:
                index = msgspec.json.decode(ev.data, type=_Indexed).index
            except msgspec.DecodeError:
                return False
            if index in self.indexes:
                return False
            self.indexes.add(index)
        elif ev.kind == "requested":
            if self.requested:
                return False
            self.requested = True
        elif ev.kind in _TERMINAL:
            self.ended = True
        return True


class _Writer:
    """A prepared streaming response: writes, and tells when the client left or a keep-alive is due."""

    def __init__(self, request: web.Request, resp: web.StreamResponse | None) -> None:
        self.request = request
        self.resp = resp
        self.last = time.monotonic()

    def gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    async def write(self, data: bytes) -> None:
        if self.resp is None:
            self.last = time.monotonic()
            return
        try:
            await self.resp.write(data)
        except ConnectionError as exc:
            raise _ClientGone from exc
        self.last = time.monotonic()


async def _next(feed: _Feed, out: _Writer, *, keepalive_s: float, deadline: float | None = None) -> _Event:
    """The feed's next event, however long it takes: a keep-alive comment after ``keepalive_s`` without a
    write, ``_ClientGone`` when the client left, ``TimeoutError`` past ``deadline`` (monotonic)."""
    while True:
        if out.gone():
            raise _ClientGone
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise TimeoutError
        wait = min(_TICK_S, keepalive_s, max(0.0, out.last + keepalive_s - now))
        if deadline is not None:
            wait = min(wait, deadline - now)
        ev = await feed.next(max(wait, 0.01))
        if ev is not None:
            return ev
        if time.monotonic() - out.last >= keepalive_s:
            await out.write(b": keep-alive\n\n")


def make_app(bus: Bus, settings: GatewaySettings) -> web.Application:
    metrics = _Metrics()
    streams = _Streams(settings.max_streams, metrics.open_streams)
    tokens = tuple(t.encode() for t in settings.api_tokens)
    param_names = frozenset(f.encode_name for f in msgspec.structs.fields(SessionParams))
    param_schema = msgspec.json.schema(SessionParams)["$defs"]["SessionParams"]["properties"]
    int_params = frozenset(k for k, v in param_schema.items() if v.get("type") == "integer")

    @web.middleware
    async def errors_and_auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource else "unmatched"
        started = time.perf_counter()
        status = 500
        try:
            if tokens and request.path.startswith("/v1/"):
                _check_token(request, tokens)
            response = await handler(request)
            status = response.status
            return response
        except HttpError as exc:
            status = exc.status
            raise
        except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413...
            status = exc.status
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            raise HttpError(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, headers) from exc
        except (nats.errors.Error, ConnectionError) as exc:
            status = 503
            log.warning("dependency_error", route=route, error=repr(exc))
            raise HttpError(503, "unavailable", f"NATS did not answer: {type(exc).__name__}") from exc
        except TimeoutError as exc:
            status = 504
            raise HttpError(504, "timeout", "a dependency did not answer in time") from exc
        except Exception as exc:  # the last resort: still JSON
            status = 500
            log.exception("unexpected_error", route=route)
            raise HttpError(500, "internal", f"unexpected error: {type(exc).__name__}") from exc
        finally:
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)

    app = web.Application(middlewares=[errors_and_auth], client_max_size=1024 * 1024)
    app[OPEN_STREAMS] = streams

    async def _read_json(request: web.Request, kind: type[Any]) -> Any:
        ctype = request.content_type
        if request.headers.get("Content-Type") and not (
            ctype == "application/json"
            or ctype.endswith("+json")
            or ctype == "application/x-www-form-urlencoded"  # curl -d's default; the body is still JSON
        ):
            raise HttpError(415, "unsupported_media_type", f"send application/json, not {ctype}")
        raw = await request.read()
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise HttpError(400, "bad_json", f"request body is not valid JSON: {exc}") from exc
        try:
            return msgspec.convert(data, kind)
        except msgspec.ValidationError as exc:
            raise HttpError(422, "invalid_request", str(exc)) from exc

    def _params(policy: str | None, overrides: dict[str, Any], where: str) -> SessionParams:
        unknown = sorted(set(overrides) - param_names)
        if unknown:
            hint = difflib.get_close_matches(unknown[0], sorted(param_names), n=1)
            also = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise HttpError(422, "invalid_params", f"{where}: unknown parameter '{unknown[0]}'{also}")
        # JSON has one number type: 3.0 is the integer 3 (as JSON Schema reads it).
        overrides = {
            k: int(v) if k in int_params and isinstance(v, float) and v.is_integer() else v
            for k, v in overrides.items()
        }
        try:
            msgspec.convert(overrides, SessionParams)  # each value the request gives, even one overridden
            merged = {**settings.default_params, **overrides}
            if policy is not None:
                merged["policy"] = policy
            return msgspec.convert(merged, SessionParams)
        except msgspec.ValidationError as exc:
            raise HttpError(422, "invalid_params", f"{where}: {exc}") from exc
        except (TypeError, ValueError) as exc:  # a check in the Struct itself
            raise HttpError(422, "invalid_params", f"{where}: {exc}") from exc

    def _idempotency_key(request: web.Request) -> str | None:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return None
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise HttpError(
                400, "bad_idempotency_key", "Idempotency-Key is 1 to 255 printable ASCII characters"
            )
        return key

    async def _stored_request(session_id: str) -> SessionRequested | None:
        try:
            msg = await bus.js.get_last_msg(EVENT_STREAM, event_subject(session_id, "requested"))
        except NotFoundError:
            return None
        if msg.data is None:
            return None
        try:
            ev = decode_message(msg.data)
        except msgspec.DecodeError:  # garbage on the subject is no request
            return None
        return ev if isinstance(ev, SessionRequested) else None

    def _same(stored: SessionRequested, question: str, params: SessionParams) -> bool:
        return stored.question == question and msgspec.to_builtins(stored.params) == msgspec.to_builtins(
            params
        )

    async def _submit(request: web.Request, question: str, params: SessionParams) -> tuple[str, bool]:
        """Publish the request; (session id, whether an earlier request with the same key made it)."""
        if not _NOT_BLANK.search(question):
            raise HttpError(422, "invalid_request", "question is blank")
        key = _idempotency_key(request)
        if key is None:
            session_id = uuid.uuid4().hex
        else:
            session_id = idempotent_session_id(_bearer(request), key)
            stored = await _stored_request(session_id)
            if stored is not None:
                return session_id, _check_same(stored, question, params)
        await bus.publish(
            SessionRequested(
                session_id=session_id, question=question, params=params, requested_at=time.time()
            ),
            msg_id=f"{session_id}.requested",
        )
        if key is not None:
            # Within the duplicate window JetStream drops a concurrent second publish: compare with the
            # request that was kept.
            stored = await _stored_request(session_id)
            if stored is not None:
                _check_same(stored, question, params)
        metrics.sessions.labels(params.policy).inc()
        return session_id, False

    def _check_same(stored: SessionRequested, question: str, params: SessionParams) -> bool:
        if not _same(stored, question, params):
            raise HttpError(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request (question or parameters)",
            )
        return True

    async def create_session(request: web.Request) -> web.Response:
        body: _SessionBody = await _read_json(request, _SessionBody)
        params = _params(body.policy, body.params, "params")
        session_id, replayed = await _submit(request, body.question, params)
        resp = _json({"session_id": session_id}, status=202)
        resp.headers["Location"] = f"/v1/sessions/{session_id}"
        if replayed:
            resp.headers["Idempotent-Replayed"] = "true"
        return resp

    async def _snapshot(session_id: str) -> SessionSnapshot | None:
        try:
            entry = await bus.kv.get(session_id)
        except (KeyNotFoundError, KeyDeletedError):  # never there, deleted, or expired (the bucket's TTL)
            return None
        if entry.value is None:
            return None
        return msgspec.json.decode(entry.value, type=SessionSnapshot)

    def _not_found(session_id: str) -> HttpError:
        return HttpError(
            404, "not_found", f"unknown or expired session {session_id}: sessions are kept for a limited time"
        )

    async def get_session(request: web.Request) -> web.Response:
        session_id = _session_id(request)
        snap = await _snapshot(session_id)
        if snap is None:
            if await _stored_request(session_id) is not None:  # accepted, not yet picked up
                return _json({"session_id": session_id, "status": "queued"})
            raise _not_found(session_id)
        return _json(_session_view(snap))

    async def session_events(request: web.Request) -> web.StreamResponse:
        session_id = _session_id(request)
        after = _last_event_id(request)
        if await _snapshot(session_id) is None and await _stored_request(session_id) is None:
            raise _not_found(session_id)
        with streams.slot():
            async with _Feed(bus, session_id) as feed:
                resp = web.StreamResponse(
                    headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                )
                await resp.prepare(request)
                out = _Writer(request, resp)
                seen = _Seen()
                try:
                    while True:
                        ev = await _next(feed, out, keepalive_s=settings.sse_keepalive_s)
                        # Events up to Last-Event-ID are only read: the client has them, and what they
                        # committed must not come again under another id.
                        if seen.fresh(ev) and ev.seq > after:
                            await out.write(
                                f"id: {ev.seq}\nevent: {ev.kind}\ndata: ".encode() + ev.data + b"\n\n"
                            )
                        if seen.ended:
                            break
                except _ClientGone:
                    return resp
                except Exception:  # the stream has begun: end it; the client resumes with Last-Event-ID
                    log.exception("event_stream_failed", session_id=session_id)
                with contextlib.suppress(ConnectionError):
                    await resp.write_eof()
                return resp

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        body: _ChatBody = await _read_json(request, _ChatBody)
        users = [
            m.content
            for m in body.messages
            if m.role == "user" and m.content and _NOT_BLANK.search(m.content)
        ]
        if not users:
            raise HttpError(422, "invalid_request", "messages needs a user message with content")
        params = _params(body.trigreason.policy, body.trigreason.params, "trigreason.params")
        _idempotency_key(request)  # a bad key is a 400 before anything is published
        with streams.slot():
            session_id, _replayed = await _submit(request, users[-1], params)
            deadline = time.monotonic() + settings.session_timeout_s
            if body.stream:
                return await _chat_stream(request, body, session_id, deadline)
            return await _chat_blocking(request, body, session_id, deadline)

    async def _chat_blocking(
        request: web.Request, body: _ChatBody, session_id: str, deadline: float
    ) -> web.Response:
        reasoning: list[str] = []
        end: SessionFinished | SessionFailed | None = None
        seen = _Seen()
        async with _Feed(bus, session_id) as feed:
            try:
                out = _Writer(request, None)
                while True:
                    ev = await _next(feed, out, keepalive_s=_TICK_S, deadline=deadline)
                    if not seen.fresh(ev):
                        continue
                    msg = _decode(ev)
                    if isinstance(msg, StepCommitted):
                        reasoning.append(msg.text)
                    elif isinstance(msg, SessionFinished | SessionFailed):
                        end = msg
                        break
            except TimeoutError as exc:
                raise HttpError(
                    504,
                    "timeout",
                    f"session {session_id} did not end within {settings.session_timeout_s:g} s; "
                    f"follow it at /v1/sessions/{session_id}",
                ) from exc
            except _ClientGone:
                return _json({}, status=499)  # nobody reads it
        if not isinstance(end, SessionFinished):
            message = end.message if end is not None else "no result"
            raise HttpError(502, "session_failed", f"session {session_id}: {message}")
        return _json(
            {
                "id": f"chatcmpl-{session_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": _content(end, reasoning),
                            "reasoning_content": "\n\n".join(reasoning),
                        },
                        "finish_reason": _finish_reason(end),
                    }
                ],
                "usage": {
                    "completion_tokens": end.stats.srm_tokens + end.stats.lrm_tokens,
                    "prompt_tokens": 0,
                    "total_tokens": end.stats.srm_tokens + end.stats.lrm_tokens,
                },
                "trigreason": {"session_id": session_id, "stats": msgspec.to_builtins(end.stats)},
            }
        )

    async def _chat_stream(
        request: web.Request, body: _ChatBody, session_id: str, deadline: float
    ) -> web.StreamResponse:
        created = int(time.time())
        chunk_id = f"chatcmpl-{session_id}"
        async with _Feed(bus, session_id) as feed:
            resp = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await resp.prepare(request)
            out = _Writer(request, resp)

            async def send(delta: dict[str, Any], finish: str | None = None) -> None:
                chunk = {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                await out.write(b"data: " + msgspec.json.encode(chunk) + b"\n\n")

            async def error(code: str, message: str) -> None:
                await out.write(
                    b"data: " + msgspec.json.encode({"error": {"code": code, "message": message}}) + b"\n\n"
                )

            reasoning: list[str] = []
            seen = _Seen()
            try:
                await send({"role": "assistant", "content": ""})
                try:
                    while True:
                        ev = await _next(feed, out, keepalive_s=settings.sse_keepalive_s, deadline=deadline)
                        if not seen.fresh(ev):
                            continue
                        msg = _decode(ev)
                        if isinstance(msg, StepCommitted):
                            reasoning.append(msg.text)
                            await send({"reasoning_content": msg.text + "\n\n"})
                        elif isinstance(msg, SessionFinished):
                            await send({"content": _content(msg, reasoning)}, finish=_finish_reason(msg))
                            break
                        elif isinstance(msg, SessionFailed):
                            await error(msg.code, f"session {session_id} failed: {msg.message}")
                            break
                except TimeoutError:
                    await error(
                        "timeout",
                        f"session {session_id} did not end within {settings.session_timeout_s:g} s",
                    )
                except _ClientGone:
                    raise
                except Exception as exc:
                    log.exception("chat_stream_failed", session_id=session_id)
                    await error(
                        "unavailable", f"the session's events could not be read: {type(exc).__name__}"
                    )
                await out.write(b"data: [DONE]\n\n")
                await resp.write_eof()
            except (_ClientGone, ConnectionError):
                pass
            return resp

    async def models(_request: web.Request) -> web.Response:
        return _json(
            {
                "object": "list",
                "data": [{"id": "trigreason", "object": "model", "created": 0, "owned_by": "trigreason"}],
            }
        )

    async def healthz(_request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        if not bus.nc.is_connected:
            raise HttpError(503, "not_ready", "not connected to NATS")
        return _json({"status": "ready"})

    async def metrics_endpoint(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    document = openapi_document(auth=bool(tokens))

    async def openapi(_request: web.Request) -> web.Response:
        return _json(document)

    app.router.add_post("/v1/sessions", create_session)
    app.router.add_get("/v1/sessions/{session_id}", get_session, allow_head=False)
    app.router.add_get("/v1/sessions/{session_id}/events", session_events, allow_head=False)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models, allow_head=False)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics_endpoint, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
    return app


def _decode(ev: _Event) -> Any:
    try:
        return decode_message(ev.data)
    except (msgspec.DecodeError, ValueError):
        log.warning("undecodable_event", seq=ev.seq, kind=ev.kind)
        return None


def _content(end: SessionFinished, reasoning: list[str]) -> str:
    """The answer; a session that committed a step never gives an empty message."""
    if end.answer:
        return end.answer
    return reasoning[-1] if reasoning else ""


def _finish_reason(end: SessionFinished) -> str:
    return "stop" if end.reason in ("final_answer", "eos") else "length"


def _bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def _check_token(request: web.Request, tokens: tuple[bytes, ...]) -> None:
    try:
        token = _bearer(request).encode()
    except UnicodeEncodeError:
        token = b""
    # compare_digest on bytes: on str it raises for non-ASCII text
    if not token or not any(hmac.compare_digest(token, t) for t in tokens):
        raise HttpError(
            401, "unauthorized", "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )


def _session_id(request: web.Request) -> str:
    session_id = request.match_info["session_id"]
    if not _SESSION_ID.fullmatch(session_id):
        raise HttpError(400, "bad_session_id", "a session id is 1 to 64 ASCII letters, digits, '-' and '_'")
    return session_id


def _last_event_id(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    if not _LAST_EVENT_ID.fullmatch(raw) or int(raw) > _MAX_EVENT_ID:
        raise HttpError(400, "bad_last_event_id", "Last-Event-ID must be an event id from this stream")
    return int(raw)


def _session_view(snap: SessionSnapshot) -> dict[str, Any]:
    status = {"finished": "finished", "failed": "failed", "new": "queued"}.get(snap.phase, "running")
    return {
        "session_id": snap.session_id,
        "status": status,
        "question": snap.question,
        "policy": snap.params.policy,
        "answer": snap.answer,
        "end_reason": snap.end_reason,
        "steps": [
            {"index": s.index, "role": s.role, "text": s.text, "tokens": s.tokens, "trigger": s.trigger}
            for s in snap.steps
        ],
        "stats": msgspec.to_builtins(session_stats(snap)),
        "params": msgspec.to_builtins(snap.params),
    }
