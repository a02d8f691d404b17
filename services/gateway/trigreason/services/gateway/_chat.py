"""``POST /v1/chat/completions``: OpenAI's chat completion, blocking or streamed, over a session's events."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
import structlog
from aiohttp import web

from trigreason.proto import PolicyName, SessionFailed, SessionFinished, StepCommitted
from trigreason.services.runtime import Bus

from ._feed import TICK_S, ClientGone, Feed, Seen, Writer, decode_event, next_event
from ._http import HttpError, json_response
from ._openapi import MAX_QUESTION_CHARS
from ._settings import GatewaySettings

__all__ = ["ChatBody", "chat_blocking", "chat_stream"]

log = structlog.get_logger("trigreason.gateway")


class ChatMessage(msgspec.Struct, kw_only=True):
    role: str
    content: Annotated[str, msgspec.Meta(max_length=MAX_QUESTION_CHARS)] | None = None


class ChatExtension(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    policy: PolicyName | None = None
    params: dict[str, Any] = {}


class ChatBody(msgspec.Struct, kw_only=True):
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    model: str = "trigreason"
    stream: bool = False
    trigreason: ChatExtension = msgspec.field(default_factory=ChatExtension)


async def chat_blocking(
    bus: Bus,
    settings: GatewaySettings,
    request: web.Request,
    body: ChatBody,
    session_id: str,
    deadline: float,
) -> web.Response:
    """The whole completion once the session ended: 504 past ``deadline`` (monotonic), 502 if it failed."""
    reasoning: list[str] = []
    end: SessionFinished | SessionFailed | None = None
    seen = Seen()
    async with Feed(bus, session_id) as feed:
        try:
            out = Writer(request, None)
            while True:
                ev = await next_event(feed, out, keepalive_s=TICK_S, deadline=deadline)
                if not seen.fresh(ev):
                    continue
                msg = decode_event(ev)
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
        except ClientGone:
            return json_response({}, status=499)  # nobody reads it
    if not isinstance(end, SessionFinished):
        message = end.message if end is not None else "no result"
        raise HttpError(502, "session_failed", f"session {session_id}: {message}")
    return json_response(
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


async def chat_stream(
    bus: Bus,
    settings: GatewaySettings,
    request: web.Request,
    body: ChatBody,
    session_id: str,
    deadline: float,
) -> web.StreamResponse:
    """The completion as chunks: each committed step as reasoning, then the answer, or an error chunk."""
    created = int(time.time())
    chunk_id = f"chatcmpl-{session_id}"
    async with Feed(bus, session_id) as feed:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        out = Writer(request, resp)

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
        seen = Seen()
        try:
            await send({"role": "assistant", "content": ""})
            try:
                while True:
                    ev = await next_event(feed, out, keepalive_s=settings.sse_keepalive_s, deadline=deadline)
                    if not seen.fresh(ev):
                        continue
                    msg = decode_event(ev)
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
            except ClientGone:
                raise
            except Exception as exc:
                log.exception("chat_stream_failed", session_id=session_id)
                await error("unavailable", f"the session's events could not be read: {type(exc).__name__}")
            await out.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ClientGone, ConnectionError):
            pass
        return resp


def _content(end: SessionFinished, reasoning: list[str]) -> str:
    """The answer; a session that committed a step never gives an empty message."""
    if end.answer:
        return end.answer
    return reasoning[-1] if reasoning else ""


def _finish_reason(end: SessionFinished) -> str:
    return "stop" if end.reason in ("final_answer", "eos") else "length"
