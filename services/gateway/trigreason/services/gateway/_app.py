"""The HTTP gateway (aiohttp): sessions in, their events out as Server-Sent Events, an OpenAI-compatible
chat endpoint, health, readiness, metrics and the OpenAPI document.

``Gateway`` holds one handler per route (``make_app`` lists them); ``errors_and_auth`` is the middleware.
The session view is a projection of the session's events (``_projection``), the event stream is ``_sse``,
the chat completions ``_chat``.

Every answer that is not a 2xx is JSON ``{"error": {"code", "message"}}``: 4xx for the client's mistakes,
503/504 when NATS or the session does not answer, and a JSON 500 only as a last resort.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgspec
import nats.errors
import structlog
from aiohttp import web
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Gauge, Histogram

from trigreason.proto import (
    EVENT_STREAM,
    BackendLimits,
    Role,
    SessionParams,
    SessionRequested,
    decode_message,
    event_subject,
)
from trigreason.services.runtime import Bus, SiteRegistry, backend_limits, exposition
from trigreason.services.trigger_evaluator.policies import PolicyError, PolicyRegistry

from ._browser import install_browser
from ._chat import (
    ChatBody,
    Conversation,
    chat_blocking,
    chat_request,
    chat_stream,
    model_ids,
    model_list,
)
from ._feed import decode_event, last_sequence, read_to
from ._http import (
    HttpError,
    bearer,
    check_token,
    idempotency_key,
    json_response,
    last_event_id,
    path_session_id,
    read_json,
)
from ._limits import check_limits
from ._openapi import ROUTES, openapi_document
from ._patterns import NOT_BLANK_PATTERN
from ._projection import session_view
from ._requests import SessionBody
from ._responses import PolicyList, SessionAccepted, Status
from ._settings import GatewaySettings
from ._sse import stream_events

__all__ = ["GATEWAY", "OPEN_STREAMS", "Gateway", "idempotent_session_id", "make_app"]

_RETRY_AFTER_S = 5
_LIMITS_MAX_AGE_S = 5.0  # how long the gateway trusts the inference servers' limits it read
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)

log = structlog.get_logger("trigreason.gateway")


def idempotent_session_id(token: str, key: str) -> str:
    """The session id of a request with an ``Idempotency-Key``: the same token and key give the same id."""
    return hashlib.sha256(f"{token}\n{key}".encode()).hexdigest()[:32]


class _Metrics:
    def __init__(self, site: str) -> None:
        self.registry = SiteRegistry(site)
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


def _not_found(session_id: str) -> HttpError:
    return HttpError(
        404, "not_found", f"unknown or expired session {session_id}: sessions are kept for a limited time"
    )


def _same(stored: SessionRequested, conv: Conversation, params: SessionParams) -> bool:
    return (stored.question, stored.messages, stored.stop) == (conv.question, conv.messages, conv.stop) and (
        msgspec.to_builtins(stored.params) == msgspec.to_builtins(params)
    )


class Gateway:
    """The gateway's handlers, one method per route, over one bus connection and the settings."""

    def __init__(
        self, bus: Bus, settings: GatewaySettings, *, policies: PolicyRegistry | None = None
    ) -> None:
        self.bus = bus
        self.settings = settings
        # The built-in policies and those named in TRIGREASON_POLICY_MODULES: what requests may name.
        self.policies = policies or PolicyRegistry.from_env()
        self.metrics = _Metrics(settings.site)
        self.streams = _Streams(settings.max_streams, self.metrics.open_streams)
        self.tokens = tuple(t.encode() for t in settings.api_tokens)
        self.model_ids = model_ids(settings, self.policies.names())
        self.policy_infos = tuple(p.info() for p in self.policies)
        self.document = openapi_document(
            auth=bool(self.tokens), models=self.model_ids, policies=self.policies
        )
        self._limits: dict[Role, BackendLimits] = {}
        self._limits_at = -_LIMITS_MAX_AGE_S

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """The gateway's routes of the route table the OpenAPI document describes (``ROUTES``; the
        browser adds its own); no implicit HEAD routes."""
        for op in ROUTES:
            if op.owner == "gateway":
                router.add_route(op.method, op.path, getattr(self, op.handler))

    # -- routes ------------------------------------------------------------------------------------

    async def create_session(self, request: web.Request) -> web.Response:
        """``POST /v1/sessions``: 202 with the session id (the same again for a repeated Idempotency-Key)."""
        body: SessionBody = await read_json(request, SessionBody)
        conv = body.conversation()
        params = self._params(body.policy, body.params, "params")
        await self._check_limits(params, "params")
        session_id, replayed = await self._submit(request, conv, params)
        resp = json_response(SessionAccepted(session_id=session_id), status=202)
        resp.headers["Location"] = f"/v1/sessions/{session_id}"
        if replayed:
            resp.headers["Idempotent-Replayed"] = "true"
        return resp

    async def get_session(self, request: web.Request) -> web.Response:
        """``GET /v1/sessions/{id}``: the projection of the session's events up to the last one now."""
        session_id = path_session_id(request)
        last = await last_sequence(self.bus, session_id)
        if last is None:
            raise _not_found(session_id)
        events = await read_to(self.bus, session_id, last)
        view = session_view(session_id, (decode_event(ev) for ev in events))
        if view is None:  # nothing on its subjects is an event of the session
            raise _not_found(session_id)
        return json_response(view)

    async def session_events(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/sessions/{id}/events``: Server-Sent Events until the session ends."""
        session_id = path_session_id(request)
        after = last_event_id(request)
        if await last_sequence(self.bus, session_id) is None:
            raise _not_found(session_id)
        with self.streams.slot():
            return await stream_events(
                self.bus, request, session_id, after=after, keepalive_s=self.settings.sse_keepalive_s
            )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``: a session for the user's question, answered as OpenAI does."""
        body: ChatBody = await read_json(request, ChatBody)
        chat = chat_request(body, self.settings, self.policies.names())
        for name, param, value in chat.given:  # OpenAI's temperature, top_p, seed, max_tokens
            self._params(None, {param: value}, name)
        params = self._params(chat.policy, {**chat.params, **body.trigreason.params}, "trigreason.params")
        await self._check_limits(params, "trigreason.params")
        idempotency_key(request)  # a bad key is a 400 before anything is published
        with self.streams.slot():
            session_id, _replayed = await self._submit(request, chat.conversation, params)
            deadline = time.monotonic() + self.settings.session_timeout_s
            if body.stream:
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                return await chat_stream(
                    self.bus, self.settings, request, chat, session_id, deadline, include_usage=include_usage
                )
            return await chat_blocking(self.bus, self.settings, request, chat, session_id, deadline)

    async def models(self, _request: web.Request) -> web.Response:
        """``GET /v1/models``: the profile (if the gateway has one) and the policies, as model ids."""
        return json_response(model_list(self.model_ids))

    async def list_policies(self, _request: web.Request) -> web.Response:
        """``GET /v1/policies``: the registered policies with their parameters (``trigreason policies``)."""
        return json_response(PolicyList(policies=list(self.policy_infos)))

    async def healthz(self, _request: web.Request) -> web.Response:
        return json_response(Status(status="ok"))

    async def readyz(self, _request: web.Request) -> web.Response:
        if not self.bus.nc.is_connected:
            raise HttpError(503, "not_ready", "not connected to NATS")
        return json_response(Status(status="ready"))

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        body, content_type = exposition(self.metrics.registry, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def openapi(self, _request: web.Request) -> web.Response:
        return json_response(self.document)

    # -- submitting a session ----------------------------------------------------------------------

    def _params(self, policy: str | None, overrides: dict[str, Any], where: str) -> SessionParams:
        """The request's parameters over the profile's defaults, checked by the policy registry: 422 for
        an unknown policy or parameter name (with a suggestion) or a value out of bounds."""
        try:
            self.policies.session_params(overrides, policy=policy)  # each value given, even one overridden
            merged = {**self.settings.default_params, **overrides}
            return self.policies.session_params(merged, policy=policy)
        except PolicyError as exc:
            if exc.code == "unknown_policy":  # the request names it, outside the parameters (as in v1)
                raise HttpError(422, "invalid_request", f"policy: {exc.message}") from exc
            raise HttpError(422, "invalid_params", f"{where}: {exc.message}") from exc

    async def _check_limits(self, params: SessionParams, where: str) -> None:
        """422 for a parameter beyond what an inference server of the session accepts (as its workers
        published it; read at most every few seconds)."""
        now = time.monotonic()
        if now - self._limits_at > _LIMITS_MAX_AGE_S:
            try:
                self._limits = await backend_limits(self.bus.js, ("srm", "lrm"))
                self._limits_at = now
            except nats.errors.Error as exc:  # unknown limits refuse nothing: the servers still do
                log.warning("backend_limits_unreadable", error=repr(exc))
        check_limits(params, self._limits, where, self.policies)

    async def _stored_request(self, session_id: str) -> SessionRequested | None:
        try:
            msg = await self.bus.js.get_last_msg(EVENT_STREAM, event_subject(session_id, "requested"))
        except NotFoundError:
            return None
        if msg.data is None:
            return None
        try:
            ev = decode_message(msg.data)
        except msgspec.DecodeError:  # garbage on the subject is no request
            return None
        return ev if isinstance(ev, SessionRequested) else None

    async def _submit(
        self, request: web.Request, conv: Conversation, params: SessionParams
    ) -> tuple[str, bool]:
        """Publish the request; (session id, whether an earlier request with the same key made it)."""
        if not _NOT_BLANK.search(conv.question):
            raise HttpError(422, "invalid_request", "question is blank")
        key = idempotency_key(request)
        if key is None:
            session_id = uuid.uuid4().hex
        else:
            session_id = idempotent_session_id(bearer(request), key)
            stored = await self._stored_request(session_id)
            if stored is not None:
                return session_id, self._check_same(stored, conv, params)
        await self.bus.publish(
            SessionRequested(
                session_id=session_id,
                question=conv.question,
                params=params,
                requested_at=time.time(),
                messages=conv.messages,
                stop=conv.stop,
            ),
            msg_id=f"{session_id}.requested",
        )
        if key is not None:
            # Within the duplicate window JetStream drops a concurrent second publish: compare with the
            # request that was kept.
            stored = await self._stored_request(session_id)
            if stored is not None:
                self._check_same(stored, conv, params)
        self.metrics.sessions.labels(params.policy).inc()
        return session_id, False

    @staticmethod
    def _check_same(stored: SessionRequested, conv: Conversation, params: SessionParams) -> bool:
        if not _same(stored, conv, params):
            raise HttpError(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request (conversation or parameters)",
            )
        return True


GATEWAY = web.AppKey("gateway", Gateway)


@web.middleware
async def errors_and_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The bearer token on ``/v1/*``, every error as JSON, and the request metrics."""
    gateway = request.app[GATEWAY]
    resource = request.match_info.route.resource
    route = resource.canonical if resource else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        if gateway.tokens and request.path.startswith("/v1/"):
            check_token(request, gateway.tokens)
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
        gateway.metrics.requests.labels(route, str(status)).inc()
        gateway.metrics.latency.labels(route).observe(time.perf_counter() - started)


def make_app(
    bus: Bus, settings: GatewaySettings, *, policies: PolicyRegistry | None = None
) -> web.Application:
    gateway = Gateway(bus, settings, policies=policies)
    app = web.Application(middlewares=[errors_and_auth], client_max_size=1024 * 1024)
    app[GATEWAY] = gateway
    app[OPEN_STREAMS] = gateway.streams
    gateway.add_routes(app.router)
    install_browser(app, gateway)
    return app
