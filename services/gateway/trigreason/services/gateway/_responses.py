"""The JSON bodies the gateway answers with, as msgspec Structs: the handlers encode these, and the OpenAPI
document's response schemas are msgspec's rendering of them (``_openapi``), so the two cannot drift.

Fields without defaults are always sent (``required`` in the document); ``UNSET`` ones may be absent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from trigreason.proto import ChatTurn, Role, SessionStats
from trigreason.services.trigger_evaluator.policies import PolicyInfo

from ._patterns import SESSION_ID_PATTERN

__all__ = [
    "ChatChunk",
    "ChatCompletion",
    "ChunkChoice",
    "ChunkDelta",
    "CompletionChoice",
    "CompletionMessage",
    "Error",
    "ErrorDetail",
    "FinishReason",
    "Model",
    "ModelList",
    "PolicyList",
    "SessionAccepted",
    "SessionList",
    "SessionStatus",
    "SessionSummary",
    "SessionView",
    "Status",
    "Trace",
    "TrigReasonResult",
    "Usage",
    "ViewStep",
]

# The view's ``params``: the flat request parameters (RequestParams is built from the
# policy registry in ``_openapi``, so it is named here rather than rendered from a type).
_REQUEST_PARAMS = {"$ref": "#/components/schemas/RequestParams"}

FinishReason = Literal["stop", "length"]
SessionStatus = Literal["queued", "running", "finished", "failed"]


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: str
    message: str


class Error(msgspec.Struct, kw_only=True):
    """Every answer that is not a 2xx."""

    error: ErrorDetail


class SessionAccepted(msgspec.Struct, kw_only=True):
    session_id: Annotated[str, Meta(pattern=SESSION_ID_PATTERN)]


class Status(msgspec.Struct, kw_only=True):
    status: str


class ViewStep(msgspec.Struct, kw_only=True):
    index: int
    role: Role
    text: str
    tokens: int
    trigger: str | None


class SessionView(msgspec.Struct, kw_only=True):
    """A projection of the session's events up to the last one. Where the session's request has expired
    before its other events, question, conversation, policy and params are absent."""

    session_id: str
    status: SessionStatus
    question: str | UnsetType = UNSET
    conversation: (
        Annotated[
            list[ChatTurn],
            Meta(
                description="the conversation apart from the steps: system messages and earlier turns "
                "(context), the question last"
            ),
        ]
        | UnsetType
    ) = UNSET
    policy: str | UnsetType = UNSET
    answer: str | None
    end_reason: str | None
    steps: list[ViewStep]
    stats: SessionStats
    params: Annotated[dict[str, Any], Meta(extra_json_schema=_REQUEST_PARAMS)] | UnsetType = UNSET


class Usage(msgspec.Struct, kw_only=True):
    """prompt_tokens: the prompt the session's first backend call read; completion_tokens: the committed
    steps' tokens; total_tokens: their sum."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TrigReasonResult(msgspec.Struct, kw_only=True):
    """answer: the \\boxed{} value (null without one); end_reason: why the session ended."""

    session_id: str
    answer: str | None
    end_reason: str
    stats: SessionStats


class CompletionMessage(msgspec.Struct, kw_only=True):
    """content: the committed step that holds the final answer, or without one the last committed step;
    reasoning_content: every committed step."""

    role: Literal["assistant"]
    content: str
    reasoning_content: str


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: Literal[0]
    message: CompletionMessage
    finish_reason: FinishReason


class ChatCompletion(msgspec.Struct, kw_only=True):
    """OpenAI's chat completion, with TrigReason's result in ``trigreason``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: Annotated[list[CompletionChoice], Meta(min_length=1, max_length=1)]
    usage: Usage
    trigreason: TrigReasonResult


class ChunkDelta(msgspec.Struct, kw_only=True):
    """What one chunk adds: the role (first chunk, with empty content), a committed step as
    reasoning_content, or the answer's step as content."""

    role: Literal["assistant"] | UnsetType = UNSET
    content: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: Literal[0]
    delta: ChunkDelta
    finish_reason: FinishReason | None


class ChatChunk(msgspec.Struct, kw_only=True):
    """OpenAI's chat.completion.chunk. ``usage``: with stream_options.include_usage, null in every chunk
    but the last, which has no choices and the usage; ``trigreason``: on the answer's chunk."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: Annotated[list[ChunkChoice], Meta(max_length=1)]
    usage: Usage | UnsetType | None = UNSET
    trigreason: TrigReasonResult | UnsetType = UNSET


class Model(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(msgspec.Struct, kw_only=True):
    """OpenAI's model list."""

    object: Literal["list"]
    data: list[Model]


class PolicyList(msgspec.Struct, kw_only=True):
    policies: list[PolicyInfo]


class SessionSummary(msgspec.Struct, kw_only=True):
    """A recent session as the browser lists it (expired: its events are gone)."""

    session_id: str
    question: str
    policy: str
    requested_at: float
    status: Literal["queued", "running", "finished", "failed", "expired"]
    srm_token_ratio: float | None


class SessionList(msgspec.Struct, kw_only=True):
    """The recent sessions (newest first), the policies, the default parameters, the profile's name (where
    the settings have one) and the trace URL template."""

    sessions: list[SessionSummary]
    now: float
    policies: list[str]
    default_params: dict[str, Any]
    profile: str | None
    trace_url_template: str | None


class Trace(msgspec.Struct, kw_only=True):
    """The session's trace id (from its request's traceparent) and its URL in the trace UI."""

    trace_id: str | None
    url: str | None
