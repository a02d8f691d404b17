"""``POST /v1/chat/completions`` and ``GET /v1/models``: OpenAI's chat completion, blocking or streamed, over
a session's events, and the models it answers as.

What OpenAI clients get:

* ``message.content`` is the answer text: the committed step that holds the final answer (``\\boxed{}``),
  or, with none, the last committed step, so it is never empty once a step was committed. The boxed value
  alone is ``trigreason.answer``; every step is in ``reasoning_content``.
* ``usage.prompt_tokens`` is the prompt the first backend call read (its ``timings.prompt_tokens``), and
  ``total_tokens`` is prompt plus completion. A stream with ``stream_options.include_usage`` ends with a
  chunk whose ``choices`` are empty and which carries ``usage``, as OpenAI's does.
* ``finish_reason`` is ``stop`` (a final answer, end of sequence, a stop sequence) or ``length`` (a budget
  or cap). ``stop`` is honoured on the committed text: the session ends at the first stop sequence, and
  the step that reached it is cut before it.
* A failure before the stream starts is an HTTP error with a JSON error body; a failure in the stream is
  a ``data: {"error": {...}}`` chunk, then ``data: [DONE]``. A session the backend refused
  (``request_refused``) is a 422 to a blocking client, any other failure a 502.
* ``model`` picks one of ``GET /v1/models``: a policy, or the gateway's profile; another is a 404
  ``model_not_found``. ``temperature``, ``top_p``, ``seed`` and ``max_tokens`` (or
  ``max_completion_tokens``) set the session's parameters of those names; ``trigreason.params`` and
  ``trigreason.policy`` win.
* ``messages`` is a conversation: system (or developer) messages, user and assistant turns, rendered
  through each model's chat template; the session answers the last user turn, and earlier assistant turns
  are context, not steps. ``content`` is a string or a list of text parts (joined by newlines); another
  part type is a 422 ``unsupported_content``.
* No member is silently ignored: each OpenAI member is honoured, refused with a 422 ``unsupported_field``
  that names it, or accepted with no effect where that is its meaning here (docs/chat.md has the table);
  a member OpenAI does not define is a 422 too.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import structlog
from aiohttp import web
from msgspec import UNSET, UnsetType

from trigreason.proto import (
    MAX_CONVERSATION_BYTES,
    MAX_STOP_SEQUENCES,
    ChatRole,
    ChatTurn,
    PolicyName,
    SessionFailed,
    SessionFinished,
    SessionStats,
    StepCommitted,
    StepGenerated,
    Verdict,
)
from trigreason.services.runtime import Bus
from trigreason.services.trigger_evaluator.policies import PolicyRegistry

from ._feed import TICK_S, ClientGone, Feed, Seen, Writer, decode_event, next_event
from ._http import HttpError, json_response
from ._patterns import MAX_QUESTION_CHARS, NOT_BLANK_PATTERN
from ._responses import (
    ChatChunk,
    ChatCompletion,
    ChunkChoice,
    ChunkDelta,
    CompletionChoice,
    CompletionMessage,
    Error,
    ErrorDetail,
    FinishReason,
    Model,
    ModelList,
    TrigReasonResult,
    Usage,
)
from ._settings import GatewaySettings

__all__ = [
    "REFUSED_CODES",
    "ChatBody",
    "ChatMessage",
    "ChatRequest",
    "Conversation",
    "chat_blocking",
    "chat_request",
    "chat_stream",
    "conversation",
    "model_ids",
    "model_list",
    "stop_sequences",
]

log = structlog.get_logger("trigreason.gateway")

_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)
_BOX_MARKERS = ("\\boxed{", "\\fbox{")
# OpenAI's request members that are session parameters of the same name (max_completion_tokens is
# max_tokens' newer name).
_OPENAI_PARAMS = ("temperature", "top_p", "seed", "max_tokens", "max_completion_tokens")
# OpenAI's roles and the conversation's (developer is system's newer name).
_ROLES: dict[str, ChatRole] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_MAX_STOP_CHARS = 256
# Session failure codes that are the request's fault: a 422 to a blocking client, not a 502.
REFUSED_CODES = frozenset({"request_refused"})


class ContentPart(msgspec.Struct, kw_only=True):
    """One part of a message's ``content``: only ``text`` parts are read (joined); any other type is a 422."""

    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A turn: system (or developer) messages, user and assistant turns; the session answers the last user
    turn, earlier assistant turns are context. content: a string or text parts (joined by newlines, at most
    the question's length in all: beyond it a 422; another part type is a 422 unsupported_content). name:
    accepted, no effect. Tool calls and audio are refused."""

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None  # no effect: the templates have no speaker names
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    function_call: Any = None
    audio: Any = None


class ChatExtension(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """TrigReason's own parameters, over model and OpenAI's members."""

    policy: PolicyName | None = None
    params: dict[str, Any] = {}


class StreamOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """include_usage: a last chunk with empty choices carries the usage."""

    include_usage: bool = False
    include_obfuscation: bool | None = None  # no effect: chunks carry no obfuscation padding


class ChatBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """OpenAI's request, member by member (docs/chat.md has the table): each is honoured, refused with a
    422 that names it, or accepted with no effect where that is what it means here; any other is a 422."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    model: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Any = None
    # Checked as the SessionParams of the same name (a JSON number 3.0 is the integer 3).
    temperature: Any = None
    top_p: Any = None
    seed: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    stop: str | list[str] | None = None
    # Refused unless at the value that does nothing.
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: Any = None
    # Accepted, no effect (docs/chat.md says why).
    parallel_tool_calls: bool | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    trigreason: ChatExtension = msgspec.field(default_factory=ChatExtension)


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a session answers: the question (the last user turn), the whole conversation (empty for a lone
    question), the stop sequences."""

    question: str
    messages: tuple[ChatTurn, ...] = ()
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    conversation: Conversation
    model: str  # the model id the answer names
    policy: PolicyName | None  # None: the profile's (or the default) policy
    params: dict[str, Any]  # the session parameters OpenAI's members set
    # Each of those members as given, to be checked alone: (member, parameter, value).
    given: tuple[tuple[str, str, Any], ...] = ()

    @property
    def question(self) -> str:
        return self.conversation.question


def model_ids(settings: GatewaySettings, policies: tuple[str, ...]) -> tuple[str, ...]:
    """What ``model`` may name: the profile (the default) if the gateway has one, then each policy (the
    registry's names)."""
    profile = (settings.profile,) if settings.profile and settings.profile not in policies else ()
    return profile + policies


def model_list(models: tuple[str, ...]) -> ModelList:
    return ModelList(
        object="list", data=[Model(id=m, object="model", created=0, owned_by="trigreason") for m in models]
    )


def _refuse(field: str, why: str) -> HttpError:
    return HttpError(422, "unsupported_field", f"{field}: {why}")


def _text(message: ChatMessage, where: str) -> str:
    """A message's text: its string, or its text parts joined by a newline; any other part is a 422."""
    content = message.content
    if content is None:
        raise HttpError(422, "invalid_request", f"{where}.content: missing (every turn needs its text)")
    if isinstance(content, str):
        return content
    if not content:
        raise HttpError(422, "invalid_request", f"{where}.content: an empty list of parts")
    texts = []
    for j, part in enumerate(content):
        if part.type != "text":
            raise HttpError(
                422,
                "unsupported_content",
                f"{where}.content[{j}]: content parts of type '{part.type}' are not supported; only 'text' "
                "parts are (the models read text only)",
            )
        if part.text is None or not _NOT_BLANK.search(part.text):
            raise HttpError(422, "invalid_request", f"{where}.content[{j}].text: missing or blank")
        texts.append(part.text)
    return "\n".join(texts)


def conversation(
    messages: list[ChatMessage], stop: str | list[str] | None, where: str = "messages"
) -> Conversation:
    """The conversation of OpenAI's ``messages``: system (or developer) messages, user and assistant turns;
    the session answers the last user turn. 422 for roles, parts or members the models cannot read, and
    for a conversation beyond the context limit (``context_too_long``)."""
    turns: list[ChatTurn] = []
    for i, m in enumerate(messages):
        at = f"{where}[{i}]"
        for member in ("tool_calls", "tool_call_id", "function_call", "audio"):
            if getattr(m, member) is not None:
                raise _refuse(
                    f"{at}.{member}", "tool calls and audio are not supported (TrigReason writes text)"
                )
        if m.role not in _ROLES:
            raise HttpError(
                422,
                "unsupported_messages",
                f"{at}.role: '{m.role}' is not supported; messages are system (or developer), user and "
                "assistant turns (tools are not supported)",
            )
        text = _text(m, at)
        if not _NOT_BLANK.search(text):
            raise HttpError(422, "invalid_request", f"{at}.content: blank")
        if len(text) > MAX_QUESTION_CHARS:
            raise HttpError(
                422,
                "context_too_long",
                f"{at}.content: {len(text)} characters; a turn has at most {MAX_QUESTION_CHARS}",
            )
        turns.append(ChatTurn(role=_ROLES[m.role], content=text))
    users = [t for t in turns if t.role == "user"]
    if not users:
        raise HttpError(
            422,
            "unsupported_messages",
            f"{where}: no user turn; the session answers the conversation's last user message",
        )
    size = sum(len(t.content.encode()) for t in turns)
    if size > MAX_CONVERSATION_BYTES:
        raise HttpError(
            422,
            "context_too_long",
            f"{where}: the conversation is {size} bytes of text; at most {MAX_CONVERSATION_BYTES} fit the "
            "context",
        )
    # A lone user message is a question, as POST /v1/sessions' question is.
    context = tuple(turns) if len(turns) > 1 else ()
    return Conversation(question=users[-1].content, messages=context, stop=stop_sequences(stop))


def stop_sequences(stop: str | list[str] | None) -> tuple[str, ...]:
    """OpenAI's ``stop``: one string or up to four, none empty."""
    seqs = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(seqs) > MAX_STOP_SEQUENCES:
        raise _refuse("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences; got {len(seqs)}")
    for s in seqs:
        if not s or len(s) > _MAX_STOP_CHARS:
            raise HttpError(
                422, "invalid_request", f"stop: each stop sequence has 1 to {_MAX_STOP_CHARS} characters"
            )
    return seqs


def _check_unsupported(body: ChatBody) -> None:
    """422 naming the first OpenAI member that asks for something TrigReason does not do."""
    if body.n is not None and (isinstance(body.n, bool) or body.n != 1):
        raise _refuse("n", "only one choice (n = 1) is supported")
    if body.tools and body.tool_choice != "none":
        raise _refuse("tools", "tool calling is not supported (send no tools, or tool_choice 'none')")
    if body.tool_choice not in (None, "none"):
        raise _refuse("tool_choice", "only 'none' is supported (tool calling is not)")
    if body.functions:
        raise _refuse("functions", "function calling is not supported")
    if body.function_call not in (None, "none"):
        raise _refuse("function_call", "only 'none' is supported (function calling is not)")
    if body.response_format is not None and body.response_format != {"type": "text"}:
        kind = body.response_format.get("type")
        raise _refuse("response_format", f"only {{'type': 'text'}} is supported, not type {kind!r}")
    if body.logprobs:
        raise _refuse("logprobs", "log-probabilities are not returned (steps come from two models)")
    if body.top_logprobs:
        raise _refuse("top_logprobs", "log-probabilities are not returned")
    if body.audio is not None:
        raise _refuse("audio", "audio output is not supported")
    if body.modalities is not None and set(body.modalities) - {"text"}:
        raise _refuse("modalities", "only ['text'] is supported")
    if body.prediction is not None:
        raise _refuse("prediction", "predicted outputs are not supported")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(body, name):
            raise _refuse(name, "penalties are not supported (only 0)")
    if body.logit_bias:
        raise _refuse("logit_bias", "logit bias is not supported")
    for name in ("reasoning_effort", "verbosity", "web_search_options"):
        if getattr(body, name) is not None:
            raise _refuse(name, "not supported (the policy and its parameters set how a session reasons)")


def chat_request(
    body: ChatBody, settings: GatewaySettings, policies: tuple[str, ...] | None = None
) -> ChatRequest:
    """What a chat request asks for: 404 for a model the gateway does not serve, 422 for a member it
    cannot honour (naming it) or a conversation that does not end with a user turn."""
    policies = PolicyRegistry.builtin().names() if policies is None else policies  # the gateway's registry
    models = model_ids(settings, policies)
    if body.model is not None and body.model not in models:
        raise HttpError(
            404,
            "model_not_found",
            f"The model '{body.model}' does not exist on this gateway; it serves "
            f"{', '.join(models)} (GET /v1/models)",
        )
    _check_unsupported(body)
    conv = conversation(body.messages, body.stop)
    policy: PolicyName | None = None
    if body.model in policies:
        policy = body.model
    policy = body.trigreason.policy or policy  # TrigReason's own member wins
    given = tuple(
        (name, name.replace("max_completion_tokens", "max_tokens"), getattr(body, name))
        for name in _OPENAI_PARAMS
        if getattr(body, name) is not None
    )
    params = {param: value for _name, param, value in given}  # max_completion_tokens over max_tokens
    model = body.model or settings.profile or policy or settings.default_params.get("policy", "trigreason")
    return ChatRequest(conversation=conv, model=model, policy=policy, params=params, given=given)


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

    def usage(self, stats: SessionStats) -> Usage:
        completion = stats.srm_tokens + stats.lrm_tokens
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            total_tokens=self.prompt_tokens + completion,
        )


def _extension(session_id: str, end: SessionFinished) -> TrigReasonResult:
    return TrigReasonResult(session_id=session_id, answer=end.answer, end_reason=end.reason, stats=end.stats)


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
        if end is not None and end.code in REFUSED_CODES:  # the backend refused what the request asked
            raise HttpError(422, end.code, f"session {session_id}: {message}")
        raise HttpError(502, "session_failed", f"session {session_id}: {message}")
    steps = seen_usage.steps
    return json_response(
        ChatCompletion(
            id=f"chatcmpl-{session_id}",
            object="chat.completion",
            created=int(time.time()),
            model=chat.model,
            choices=[
                CompletionChoice(
                    index=0,
                    message=CompletionMessage(
                        role="assistant",
                        content=answer_text(end.answer, steps),
                        reasoning_content="\n\n".join(steps),
                    ),
                    finish_reason=_finish_reason(end),
                )
            ],
            usage=seen_usage.usage(end.stats),
            trigreason=_extension(session_id, end),
        )
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

        async def send(
            choices: list[ChunkChoice],
            usage: Usage | UnsetType | None = UNSET,
            trigreason: TrigReasonResult | UnsetType = UNSET,
        ) -> None:
            chunk = ChatChunk(
                id=chunk_id,
                object="chat.completion.chunk",
                created=created,
                model=chat.model,
                choices=choices,
                usage=None if include_usage and usage is UNSET else usage,
                trigreason=trigreason,
            )
            await out.write(b"data: " + msgspec.json.encode(chunk) + b"\n\n")

        async def delta(
            content: ChunkDelta,
            finish: FinishReason | None = None,
            trigreason: TrigReasonResult | UnsetType = UNSET,
        ) -> None:
            await send([ChunkChoice(index=0, delta=content, finish_reason=finish)], trigreason=trigreason)

        async def error(code: str, message: str) -> None:
            body = Error(error=ErrorDetail(code=code, message=message))
            await out.write(b"data: " + msgspec.json.encode(body) + b"\n\n")

        seen_usage = _Usage()
        seen = Seen()
        try:
            await delta(ChunkDelta(role="assistant", content=""))
            try:
                while True:
                    ev = await next_event(feed, out, keepalive_s=settings.sse_keepalive_s, deadline=deadline)
                    if not seen.fresh(ev):
                        continue
                    msg = decode_event(ev)
                    seen_usage.saw(msg)
                    if isinstance(msg, StepCommitted):
                        seen_usage.steps.append(msg.text)
                        await delta(ChunkDelta(reasoning_content=msg.text + "\n\n"))
                    elif isinstance(msg, SessionFinished):
                        await delta(
                            ChunkDelta(content=answer_text(msg.answer, seen_usage.steps)),
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


def _finish_reason(end: SessionFinished) -> FinishReason:
    return "stop" if end.reason in ("final_answer", "eos", "stop") else "length"
