"""``POST /v1/chat/completions`` and ``GET /v1/models``: OpenAI's chat completion, blocking or streamed, over
a session's events, and the models it answers as.

What OpenAI clients get:

* ``message.content`` is the answer text: the committed step that holds the final answer (``\\boxed{}``),
  or, with none, the last committed step, so it is never empty once a step was committed. The boxed value
  alone is ``trigreason.answer``; every step is in ``reasoning_content``.
* ``usage.prompt_tokens`` is the prompt the first backend call read (its ``timings.prompt_tokens``), and
  ``total_tokens`` is prompt plus completion. A stream with ``stream_options.include_usage`` ends with a
  chunk whose ``choices`` are empty and which carries ``usage``, as OpenAI's does.
* ``finish_reason`` is ``stop`` (a final answer, end of sequence) or ``length`` (a budget or cap).
* A failure before the stream starts is an HTTP error with a JSON error body; a failure in the stream is
  a ``data: {"error": {...}}`` chunk, then ``data: [DONE]``.
* ``model`` picks one of ``GET /v1/models``: a policy, or the gateway's profile; another is a 404
  ``model_not_found``. ``temperature``, ``top_p``, ``seed`` and ``max_tokens`` (or
  ``max_completion_tokens``) set the session's parameters of those names; ``trigreason.params`` and
  ``trigreason.policy`` win.
* One question per request: ``messages`` is a single user message. A system message or earlier turns are
  a 422 ``unsupported_messages`` (the chat template and its system prompt are the model family's).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, get_args

import msgspec
import structlog
from aiohttp import web

from trigreason.proto import (
    PolicyName,
    SessionFailed,
    SessionFinished,
    SessionStats,
    StepCommitted,
    StepGenerated,
    Verdict,
)
from trigreason.services.runtime import Bus

from ._feed import TICK_S, ClientGone, Feed, Seen, Writer, decode_event, next_event
from ._http import HttpError, json_response
from ._openapi import MAX_QUESTION_CHARS, NOT_BLANK_PATTERN
from ._settings import GatewaySettings

__all__ = [
    "ChatBody",
    "ChatRequest",
    "chat_blocking",
    "chat_request",
    "chat_stream",
    "model_ids",
    "model_list",
]

log = structlog.get_logger("trigreason.gateway")

POLICIES: tuple[str, ...] = get_args(PolicyName)
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)
_BOX_MARKERS = ("\\boxed{", "\\fbox{")
# OpenAI's request members that are session parameters of the same name (max_completion_tokens is
# max_tokens' newer name).
_OPENAI_PARAMS = ("temperature", "top_p", "seed", "max_tokens", "max_completion_tokens")


class ChatMessage(msgspec.Struct, kw_only=True):
    role: str
    content: Annotated[str, msgspec.Meta(max_length=MAX_QUESTION_CHARS)] | None = None


class ChatExtension(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    policy: PolicyName | None = None
    params: dict[str, Any] = {}


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class ChatBody(msgspec.Struct, kw_only=True):
    """OpenAI's request; members it has that TrigReason does not use are accepted and ignored."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Any = None
    # Checked as the SessionParams of the same name (a JSON number 3.0 is the integer 3).
    temperature: Any = None
    top_p: Any = None
    seed: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    trigreason: ChatExtension = msgspec.field(default_factory=ChatExtension)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    question: str
    model: str  # the model id the answer names
    policy: PolicyName | None  # None: the profile's (or the default) policy
    params: dict[str, Any]  # the session parameters OpenAI's members set
    # Each of those members as given, to be checked alone: (member, parameter, value).
    given: tuple[tuple[str, str, Any], ...] = ()


def model_ids(settings: GatewaySettings) -> tuple[str, ...]:
    """What ``model`` may name: the profile (the default) if the gateway has one, then each policy."""
    profile = (settings.profile,) if settings.profile and settings.profile not in POLICIES else ()
    return profile + POLICIES


def model_list(settings: GatewaySettings) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "trigreason"} for m in model_ids(settings)
        ],
    }


def chat_request(body: ChatBody, settings: GatewaySettings) -> ChatRequest:
    """What a chat request asks for: 404 for a model the gateway does not serve, 422 for messages other than
    one user message with a question, or for n other than 1."""
    if body.model is not None and body.model not in model_ids(settings):
        raise HttpError(
            404,
            "model_not_found",
            f"The model '{body.model}' does not exist on this gateway; it serves "
            f"{', '.join(model_ids(settings))} (GET /v1/models)",
        )
    roles = [m.role for m in body.messages]
    if roles != ["user"]:
        raise HttpError(
            422,
            "unsupported_messages",
            f"messages: exactly one message, with role 'user' (the question), is supported; got roles "
            f"[{', '.join(roles)}]. System messages and earlier turns are not: TrigReason answers one "
            "question, rendered through the model family's chat template with that family's system prompt "
            "(trigreason.params.srm_prompt / lrm_prompt). Send the question alone.",
        )
    question = body.messages[0].content
    if question is None or not _NOT_BLANK.search(question):
        raise HttpError(422, "invalid_request", "messages[0].content: the question is missing or blank")
    if body.n is not None and (isinstance(body.n, bool) or body.n != 1):
        raise HttpError(422, "invalid_request", "n: only one choice (n = 1) is supported")
    policy: PolicyName | None = None
    if body.model in POLICIES:
        policy = body.model  # type: ignore[assignment]
    policy = body.trigreason.policy or policy  # TrigReason's own member wins
    given = tuple(
        (name, name.replace("max_completion_tokens", "max_tokens"), getattr(body, name))
        for name in _OPENAI_PARAMS
        if getattr(body, name) is not None
    )
    params = {param: value for _name, param, value in given}  # max_completion_tokens over max_tokens
    model = body.model or settings.profile or policy or settings.default_params.get("policy", POLICIES[0])
    return ChatRequest(question=question, model=model, policy=policy, params=params, given=given)


class _Usage:
    """What a completion reports: the steps, the prompt of the first backend call, the end."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.prompt_tokens = 0

    def saw(self, msg: object) -> None:
        if self.prompt_tokens:
            return
        if isinstance(msg, StepGenerated):
            self.prompt_tokens = msg.timings.prompt_tokens
        elif isinstance(msg, Verdict):
            self.prompt_tokens = msg.candidate.timings.prompt_tokens

    def usage(self, stats: SessionStats) -> dict[str, int]:
        completion = stats.srm_tokens + stats.lrm_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }


def _extension(session_id: str, end: SessionFinished) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "answer": end.answer,
        "end_reason": end.reason,
        "stats": msgspec.to_builtins(end.stats),
    }


async def chat_blocking(
    bus: Bus,
    settings: GatewaySettings,
    request: web.Request,
    chat: ChatRequest,
    session_id: str,
    deadline: float,
) -> web.Response:
    """The whole completion once the session ended: 504 past ``deadline`` (monotonic), 502 if it failed."""
    seen_usage = _Usage()
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
                seen_usage.saw(msg)
                if isinstance(msg, StepCommitted):
                    seen_usage.steps.append(msg.text)
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
    steps = seen_usage.steps
    return json_response(
        {
            "id": f"chatcmpl-{session_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": answer_text(end.answer, steps),
                        "reasoning_content": "\n\n".join(steps),
                    },
                    "finish_reason": _finish_reason(end),
                }
            ],
            "usage": seen_usage.usage(end.stats),
            "trigreason": _extension(session_id, end),
        }
    )


async def chat_stream(
    bus: Bus,
    settings: GatewaySettings,
    request: web.Request,
    chat: ChatRequest,
    session_id: str,
    deadline: float,
    *,
    include_usage: bool = False,
) -> web.StreamResponse:
    """The completion as chunks: each committed step as reasoning, then the answer (and with
    ``include_usage`` a last chunk with the usage), or an error chunk; then ``[DONE]``."""
    created = int(time.time())
    chunk_id = f"chatcmpl-{session_id}"
    async with Feed(bus, session_id) as feed:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        out = Writer(request, resp)

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": chat.model,
                "choices": choices,
                **({"usage": None} if include_usage else {}),
                **extra,
            }
            await out.write(b"data: " + msgspec.json.encode(chunk) + b"\n\n")

        async def delta(content: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
            await send([{"index": 0, "delta": content, "finish_reason": finish}], **extra)

        async def error(code: str, message: str) -> None:
            await out.write(
                b"data: " + msgspec.json.encode({"error": {"code": code, "message": message}}) + b"\n\n"
            )

        seen_usage = _Usage()
        seen = Seen()
        try:
            await delta({"role": "assistant", "content": ""})
            try:
                while True:
                    ev = await next_event(feed, out, keepalive_s=settings.sse_keepalive_s, deadline=deadline)
                    if not seen.fresh(ev):
                        continue
                    msg = decode_event(ev)
                    seen_usage.saw(msg)
                    if isinstance(msg, StepCommitted):
                        seen_usage.steps.append(msg.text)
                        await delta({"reasoning_content": msg.text + "\n\n"})
                    elif isinstance(msg, SessionFinished):
                        await delta(
                            {"content": answer_text(msg.answer, seen_usage.steps)},
                            finish=_finish_reason(msg),
                            trigreason=_extension(session_id, msg),
                        )
                        if include_usage:
                            await send([], usage=seen_usage.usage(msg.stats))
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


def answer_text(answer: str | None, steps: list[str]) -> str:
    """The committed step that holds the final answer (the last with a box, when the session found one),
    else the last committed step; only a session that committed nothing gives its answer or nothing."""
    if answer is not None:
        for text in reversed(steps):
            if any(marker in text for marker in _BOX_MARKERS):
                return text
    if steps:
        return steps[-1]
    return answer or ""


def _finish_reason(end: SessionFinished) -> str:
    return "stop" if end.reason in ("final_answer", "eos") else "length"
