"""The HTTP gateway (aiohttp): sessions in, their events out as Server-Sent Events, an OpenAI-compatible
chat endpoint, health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import msgspec
from aiohttp import web
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from trigreason.profiles import load_profile
from trigreason.proto import (
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
from trigreason.services.gateway._openapi import openapi_document
from trigreason.services.orchestrator import session_stats
from trigreason.services.runtime import Bus

__all__ = ["GatewaySettings", "make_app"]

MAX_QUESTION_CHARS = 20_000
_KEEPALIVE_S = 15.0


class GatewaySettings(msgspec.Struct, kw_only=True, frozen=True):
    api_tokens: tuple[str, ...] = ()  # empty: no auth
    session_timeout_s: float = 3600.0  # how long a blocking chat completion waits
    # Parameters a request does not set come from here first (a profile), then SessionParams' defaults.
    default_params: dict[str, Any] = {}

    @classmethod
    def from_env(cls, env: dict[str, str]) -> GatewaySettings:
        tokens = tuple(t.strip() for t in env.get("TRIGREASON_API_TOKENS", "").split(",") if t.strip())
        profile = env.get("TRIGREASON_PROFILE")
        return cls(
            api_tokens=tokens,
            session_timeout_s=float(env.get("TRIGREASON_SESSION_TIMEOUT_S", "3600")),
            default_params=load_profile(profile, env=env) if profile else {},
        )


class _SessionBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    question: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_QUESTION_CHARS)]
    policy: PolicyName | None = None
    params: dict[str, Any] = {}


class _ChatMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str | None = None


class _ChatBody(msgspec.Struct, kw_only=True):
    messages: Annotated[list[_ChatMessage], msgspec.Meta(min_length=1)]
    model: str = "trigreason"
    stream: bool = False
    trigreason: dict[str, Any] = {}  # extension: {"policy": ..., "params": {...}}


class HttpError(web.HTTPException):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"error": {"code": code, "message": message}}), content_type="application/json"
        )


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


def make_app(bus: Bus, settings: GatewaySettings) -> web.Application:
    metrics = _Metrics()

    @web.middleware
    async def errors_and_auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = (
            request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        )
        started = time.perf_counter()
        status = 500
        try:
            if settings.api_tokens and request.path.startswith("/v1/"):
                _check_token(request, settings.api_tokens)
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            if isinstance(exc, HttpError):
                raise
            raise HttpError(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason) from exc
        finally:
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)

    app = web.Application(middlewares=[errors_and_auth], client_max_size=1024 * 1024)

    async def _read_json(request: web.Request, kind: type[Any]) -> Any:
        raw = await request.read()
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise HttpError(400, "bad_json", f"request body is not valid JSON: {exc}") from exc
        try:
            return msgspec.convert(data, kind)
        except msgspec.ValidationError as exc:
            raise HttpError(422, "invalid_request", str(exc)) from exc

    def _params(policy: str | None, overrides: dict[str, Any]) -> SessionParams:
        merged = {**settings.default_params, **overrides}
        if policy is not None:
            merged["policy"] = policy
        try:
            return msgspec.convert(merged, SessionParams)
        except msgspec.ValidationError as exc:
            raise HttpError(422, "invalid_params", f"params: {exc}") from exc

    async def _submit(question: str, params: SessionParams) -> str:
        if not question.strip():
            raise HttpError(422, "invalid_request", "question is blank")
        session_id = uuid.uuid4().hex
        await bus.publish(
            SessionRequested(
                session_id=session_id, question=question, params=params, requested_at=time.time()
            ),
            msg_id=f"{session_id}.requested",
        )
        metrics.sessions.labels(params.policy).inc()
        return session_id

    async def create_session(request: web.Request) -> web.Response:
        body: _SessionBody = await _read_json(request, _SessionBody)
        session_id = await _submit(body.question, _params(body.policy, body.params))
        resp = _json({"session_id": session_id}, status=202)
        resp.headers["Location"] = f"/v1/sessions/{session_id}"
        return resp

    async def _snapshot(session_id: str) -> SessionSnapshot | None:
        try:
            entry = await bus.kv.get(session_id)
        except (KeyNotFoundError, ValueError):
            return None
        if entry.value is None:
            return None
        return msgspec.json.decode(entry.value, type=SessionSnapshot)

    async def get_session(request: web.Request) -> web.Response:
        session_id = _session_id(request)
        snap = await _snapshot(session_id)
        if snap is None:
            if await _has_events(session_id):  # accepted but not yet picked up by an orchestrator
                return _json({"session_id": session_id, "status": "queued"})
            raise HttpError(404, "not_found", f"no session {session_id}")
        return _json(_session_view(snap))

    async def _has_events(session_id: str) -> bool:
        try:
            await bus.js.get_last_msg("TRIG_EVT", event_subject(session_id, "requested"))
        except Exception:
            return False
        return True

    async def _events(session_id: str, after_seq: int) -> AsyncIterator[tuple[int, str, bytes]]:
        """(stream sequence, kind, payload) of the session's events from the start (or after a sequence)."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_seq else DeliverPolicy.ALL,
            opt_start_seq=after_seq + 1 if after_seq else None,
        )
        sub = await bus.js.subscribe(event_subject(session_id, ">"), ordered_consumer=True, config=config)
        try:
            async for msg in sub.messages:
                kind = msg.subject.rsplit(".", 1)[1]
                yield msg.metadata.sequence.stream, kind, msg.data
                if kind in ("finished", "failed"):
                    return
        finally:
            await sub.unsubscribe()

    async def session_events(request: web.Request) -> web.StreamResponse:
        session_id = _session_id(request)
        last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
        try:
            after = int(last)
        except ValueError as exc:
            raise HttpError(
                400, "bad_last_event_id", "Last-Event-ID must be an event id from this stream"
            ) from exc
        if not after and await _snapshot(session_id) is None and not await _has_events(session_id):
            raise HttpError(404, "not_found", f"no session {session_id}")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        events = _events(session_id, after)
        while True:
            try:
                seq, kind, data = await asyncio.wait_for(anext(events), _KEEPALIVE_S)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            except StopAsyncIteration:
                break
            await resp.write(f"id: {seq}\nevent: {kind}\ndata: ".encode() + data + b"\n\n")
        await resp.write_eof()
        return resp

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        body: _ChatBody = await _read_json(request, _ChatBody)
        users = [m.content for m in body.messages if m.role == "user" and m.content]
        if not users:
            raise HttpError(422, "invalid_request", "messages needs a user message with content")
        ext = body.trigreason
        params = _params(ext.get("policy"), dict(ext.get("params", {})))
        session_id = await _submit(users[-1], params)
        created = int(time.time())
        chunk_id = f"chatcmpl-{session_id}"
        if not body.stream:
            reasoning: list[str] = []
            end: SessionFinished | SessionFailed | None = None
            async with asyncio.timeout(settings.session_timeout_s):
                async for _seq, _kind, data in _events(session_id, 0):
                    ev = decode_message(data)
                    if isinstance(ev, StepCommitted):
                        reasoning.append(ev.text)
                    elif isinstance(ev, SessionFinished | SessionFailed):
                        end = ev
            if isinstance(end, SessionFailed) or end is None:
                msg = end.message if end else "no result"
                raise HttpError(502, "session_failed", msg)
            return _json(
                {
                    "id": chunk_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": body.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": end.answer if end.answer is not None else "",
                                "reasoning_content": "\n\n".join(reasoning),
                            },
                            "finish_reason": "stop" if end.reason in ("final_answer", "eos") else "length",
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
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await resp.write(b"data: " + msgspec.json.encode(chunk) + b"\n\n")

        await send({"role": "assistant", "content": ""})
        async for _seq, _kind, data in _events(session_id, 0):
            ev = decode_message(data)
            if isinstance(ev, StepCommitted):
                await send({"reasoning_content": ev.text + "\n\n"})
            elif isinstance(ev, SessionFinished):
                await send({"content": ev.answer or ""}, finish="stop")
            elif isinstance(ev, SessionFailed):
                await send({"content": ""}, finish="error")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

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

    async def openapi(_request: web.Request) -> web.Response:
        return _json(openapi_document())

    app.router.add_post("/v1/sessions", create_session)
    app.router.add_get("/v1/sessions/{session_id}", get_session)
    app.router.add_get("/v1/sessions/{session_id}/events", session_events)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", openapi)
    return app


def _check_token(request: web.Request, tokens: tuple[str, ...]) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not any(hmac.compare_digest(token, t) for t in tokens):
        raise HttpError(401, "unauthorized", "a valid bearer token is required")


def _session_id(request: web.Request) -> str:
    session_id = request.match_info["session_id"]
    if not session_id.replace("-", "").replace("_", "").isalnum() or len(session_id) > 64:
        raise HttpError(400, "bad_session_id", "session ids are letters, digits, '-' and '_'")
    return session_id


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
