"""The gateway's OpenAPI 3.1 document, built rather than written: ``ROUTES`` is the gateway's route table
(``Gateway.add_routes`` and the session browser serve it: path, method and handler) and says per operation
which msgspec type the request body decodes into and, per status code, which type the answer encodes; the
schemas are msgspec's rendering of those types (``msgspec.json.schema_components``).
``tests/services/test_gateway_schemathesis.py`` holds the gateway to the result.

Two things are not types: the checks a handler makes beyond its body's type (an allowed role, a value that
does nothing, a question that is not blank) are refinements of the rendered schemas, each naming a field of
the type (a field that is no longer there is an error); and the bodies that are no single JSON value are
described around the types: a Server-Sent Event's data is JSON text of the rendered types (``ChatChunk``,
``Error``, the event stream's ``Message``), Prometheus text and the browser's pages are strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from trigreason.proto import EVENT_KINDS, MAX_STOP_SEQUENCES, V1_FLAT_PARAMS, Message, SessionParams
from trigreason.services.trigger_evaluator.policies import PolicyInfo, PolicyRegistry

from ._chat import ChatBody, ChatExtension, ChatMessage, ContentPart, StreamOptions
from ._patterns import (
    IDEMPOTENCY_KEY_PATTERN,
    LAST_EVENT_ID_PATTERN,
    MAX_QUESTION_CHARS,
    NOT_BLANK_PATTERN,
    SESSION_ID_PATTERN,
    SESSION_LIST_MAX,
    STATIC_FILES,
)
from ._requests import SessionBody
from ._responses import (
    ChatChunk,
    ChatCompletion,
    Error,
    ModelList,
    PolicyList,
    SessionAccepted,
    SessionList,
    SessionView,
    Status,
    Trace,
)

__all__ = [
    "IDEMPOTENCY_KEY_PATTERN",
    "LAST_EVENT_ID_PATTERN",
    "MAX_QUESTION_CHARS",
    "NOT_BLANK_PATTERN",
    "ROUTES",
    "SESSION_ID_PATTERN",
    "Operation",
    "Reply",
    "openapi_document",
]

_REF = "#/components/schemas/{name}"
# The request types' component names (the document's, older than the Structs').
_RENAMED = {"ChatBody": "ChatRequest", "SessionBody": "SessionRequest"}
_JSON = "application/json"
_SSE = "text/event-stream"

# A body is a msgspec type (rendered into the components) or, for what is no single JSON value, a schema
# (a dict, or the name of a hand-described component).
Body = type | dict[str, Any] | str


@dataclass(frozen=True, slots=True)
class Reply:
    description: str
    content: tuple[tuple[str, Body], ...] = ((_JSON, Error),)  # (media type, body)
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: its owner registers ``handler`` for it, the document describes it."""

    method: str
    path: str
    handler: str  # the owner's method
    operation_id: str
    replies: Mapping[int, Reply]
    summary: str = ""
    body: type | None = None  # the msgspec type the request body decodes into
    parameters: tuple[str, ...] = ()  # names in _PARAMETERS
    owner: Literal["gateway", "browser"] = "gateway"  # whose method ``handler`` is (browser: ``_browser``)


def _json(description: str, body: Body, headers: Mapping[str, Any] | None = None) -> Reply:
    return Reply(description, ((_JSON, body),), headers or {})


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
_CREATED_HEADERS = {
    "Location": {"description": "the session", "schema": {"type": "string"}, "required": True},
    "Idempotent-Replayed": {
        "description": "true when an earlier request with this Idempotency-Key made the session",
        "schema": {"type": "string"},
    },
}
_POST_ERRORS = {
    400: Reply("body is not JSON, or a bad Idempotency-Key"),
    409: Reply("Idempotency-Key reused for a different request"),
    413: Reply("body larger than 1 MiB"),
    415: Reply("body is not application/json"),
    422: Reply("invalid request: a field, a parameter (unknown names too), a blank question"),
    503: Reply("NATS unavailable"),
}
_SESSION_ERRORS = {404: Reply("unknown or expired session"), 503: Reply("NATS unavailable")}
_PAGE = Reply("the page", (("text/html", {"type": "string"}),))

ROUTES: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/sessions",
        "create_session",
        "createSession",
        summary="Start a session",
        body=SessionBody,
        parameters=("Idempotency-Key",),
        replies={202: _json("accepted", SessionAccepted, _CREATED_HEADERS), **_POST_ERRORS},
    ),
    Operation(
        "GET",
        "/v1/sessions/{session_id}",
        "get_session",
        "getSession",
        summary="A session's state: steps, answer, statistics",
        parameters=("session_id",),
        replies={200: _json("the session", SessionView), 400: Reply("not a session id"), **_SESSION_ERRORS},
    ),
    Operation(
        "GET",
        "/v1/sessions/{session_id}/events",
        "session_events",
        "sessionEvents",
        summary="The session's events as Server-Sent Events (id: the event's sequence, event: "
        "requested|committed|finished|failed, data: the message), replayable from the start, "
        "resumable with Last-Event-ID, until the terminal event. Each step index comes once. "
        "An idle stream gets a comment line every TRIGREASON_SSE_KEEPALIVE_S seconds.",
        parameters=("session_id", "Last-Event-ID", "last_event_id"),
        replies={
            200: Reply("the events", ((_SSE, "SessionEvent"),)),
            400: Reply("not a session id, or a bad Last-Event-ID"),
            429: Reply("too many open streams", headers=_RETRY_AFTER),
            **_SESSION_ERRORS,
        },
    ),
    Operation(
        "POST",
        "/v1/chat/completions",
        "chat_completions",
        "chatCompletions",
        summary="OpenAI-compatible chat completion (streaming and not); steps come as reasoning_content, the "
        'answer\'s step as content. A stream ends with data: [DONE]; a failure in it is a chunk {"error": '
        '{"code", "message"}} before [DONE].',
        body=ChatBody,
        parameters=("Idempotency-Key",),
        replies={
            200: Reply(
                "the completion, or with stream: chunks as Server-Sent Events",
                ((_JSON, ChatCompletion), (_SSE, "ChatChunkEvent")),
            ),
            **_POST_ERRORS,
            404: Reply("model_not_found: not a model of GET /v1/models"),
            422: Reply(
                "invalid request: a field, a parameter (unknown names too), a blank turn, a conversation "
                "without a user turn or with other roles (unsupported_messages), a content part other than "
                "text (unsupported_content), a conversation beyond the context limit (context_too_long), a "
                "member asking for what TrigReason does not do (unsupported_field, naming it), a request the "
                "backend refused (request_refused)"
            ),
            429: Reply("too many open streams", headers=_RETRY_AFTER),
            502: Reply("the session failed (other than request_refused)"),
            504: Reply("the session did not end within TRIGREASON_SESSION_TIMEOUT_S"),
        },
    ),
    Operation(
        "GET",
        "/v1/models",
        "models",
        "listModels",
        summary="The model ids chat completions take: the gateway's profile (if it has one), then each "
        "policy",
        replies={200: _json("OpenAI's model list", ModelList)},
    ),
    Operation(
        "GET",
        "/v1/policies",
        "list_policies",
        "listPolicies",
        summary="The registered trigger policies with their parameters, defaults and bounds "
        "(trigreason policies --json)",
        replies={200: _json("the policies", PolicyList)},
    ),
    Operation("GET", "/healthz", "healthz", "healthz", replies={200: _json("alive", Status)}),
    Operation(
        "GET",
        "/readyz",
        "readyz",
        "readyz",
        replies={200: _json("connected to NATS", Status), 503: Reply("not connected to NATS")},
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics_endpoint",
        "metrics",
        replies={200: Reply("Prometheus metrics", (("text/plain", {"type": "string"}),))},
    ),
    Operation(
        "GET",
        "/openapi.json",
        "openapi",
        "openapi",
        replies={200: _json("this document", {"type": "object"})},
    ),
    # The session browser (_browser): its pages, their files, and the two JSON routes they read.
    Operation(
        "GET",
        "/",
        "index",
        "browserIndex",
        summary="The session browser: recent sessions and a form to start one",
        replies={200: _PAGE},
        owner="browser",
    ),
    Operation(
        "GET",
        "/sessions/{session_id}",
        "session_page",
        "browserSession",
        summary="The session browser: one session, live",
        parameters=("session_id",),
        replies={200: _PAGE, 400: Reply("not a session id")},
        owner="browser",
    ),
    Operation(
        "GET",
        "/static/{name}",
        "static",
        "browserStatic",
        summary="The session browser's CSS and JavaScript",
        parameters=("name",),
        replies={
            200: Reply(
                "the file", tuple((media, {"type": "string"}) for media in sorted(set(STATIC_FILES.values())))
            ),
            404: Reply("no such file"),
        },
        owner="browser",
    ),
    Operation(
        "GET",
        "/v1/sessions",
        "list_sessions",
        "listSessions",
        summary="The recent sessions this gateway has seen requested (newest first), the policies, the "
        "default parameters and the trace URL template",
        parameters=("limit",),
        replies={
            200: _json("the sessions", SessionList),
            400: Reply(f"a bad limit (1 to {SESSION_LIST_MAX})"),
            503: Reply("NATS unavailable"),
        },
        owner="browser",
    ),
    Operation(
        "GET",
        "/v1/sessions/{session_id}/trace",
        "trace",
        "sessionTrace",
        summary="The session's trace id (from its request's traceparent) and its URL in the trace UI "
        "(TRIGREASON_TRACE_URL_TEMPLATE)",
        parameters=("session_id",),
        replies={200: _json("the trace", Trace), 400: Reply("not a session id"), **_SESSION_ERRORS},
        owner="browser",
    ),
)

_EVENT_ID = {"type": "string", "pattern": LAST_EVENT_ID_PATTERN}
_PARAMETERS: dict[str, dict[str, Any]] = {
    "session_id": {
        "name": "session_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
    },
    "Idempotency-Key": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "A retried request with the same key (and the same bearer token) gets the same "
        "session, for as long as sessions are kept; the same key with a different question or different "
        "parameters is a 409.",
        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
    },
    "Last-Event-ID": {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _EVENT_ID},
    "last_event_id": {"name": "last_event_id", "in": "query", "required": False, "schema": _EVENT_ID},
    "limit": {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": SESSION_LIST_MAX},
    },
    "name": {"name": "name", "in": "path", "required": True, "schema": {"enum": sorted(STATIC_FILES)}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _request_params(components: dict[str, Any], registry: PolicyRegistry) -> dict[str, Any]:
    """What a request's ``params`` may set (flat, as in v1): the common parameters, every registered
    policy's own (a policy ignores another's, after checking it), and ``policy_params``; an unknown name
    is an error (a misspelled parameter is rejected, not ignored; the bus messages stay lenient)."""
    session = components["SessionParams"]["properties"]
    own: dict[str, list[dict[str, Any]]] = {}
    for p in registry:
        for name, schema in components[p.params.__name__].get("properties", {}).items():
            if schema not in own.setdefault(name, []):
                own[name].append(schema)
    policy_props = {name: v[0] if len(v) == 1 else {"anyOf": v} for name, v in own.items()}
    common = {k: v for k, v in session.items() if k not in (*V1_FLAT_PARAMS, "policy", "policy_params")}
    return {
        "title": "RequestParams",
        "type": "object",
        "properties": {
            "policy": {"anyOf": [{"enum": list(registry.names())}, {"type": "null"}]},  # null: unset
            **common,
            **policy_props,
            "policy_params": {
                "type": "object",
                "description": "the policy's own parameters as an object (each policy's Struct is in "
                "components: TrigReasonParams, ...)",
                "properties": policy_props,
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    }


def _refine(components: dict[str, Any], kind: type, fields: dict[str, dict[str, Any]], **schema: Any) -> None:
    """Narrow ``kind``'s rendered schema to what its handler accepts: each of ``fields`` (a field of the
    type) gets the keywords given (a ``$ref`` replaces it); ``schema`` sets keywords of the object."""
    rendered = components[kind.__name__]
    props = rendered["properties"]
    for name, refinement in fields.items():
        if name not in props:
            raise ValueError(f"{kind.__name__} has no field {name!r} to refine")
        props[name] = dict(refinement) if "$ref" in refinement else {**props[name], **refinement}
    rendered.update(schema)
    for name in rendered.get("required", ()):
        props[name].pop("default", None)  # a required member has none


def _refine_requests(components: dict[str, Any], registry: PolicyRegistry, models: tuple[str, ...]) -> None:
    """The checks the handlers make beyond the types (``_chat``, ``_app``): each a 422 otherwise."""
    for kind in (ChatBody, ChatMessage, ChatExtension, StreamOptions, SessionBody):
        if kind.__struct_config__.forbid_unknown_fields:
            components[kind.__name__]["additionalProperties"] = False
    question = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_QUESTION_CHARS,
        "pattern": NOT_BLANK_PATTERN,
    }
    null: dict[str, Any] = {"type": "null"}
    _refine(components, ContentPart, {"type": {"const": "text"}, "text": question}, required=["type", "text"])
    _refine(
        components,
        ChatMessage,
        {
            "role": {"enum": ["system", "developer", "user", "assistant"]},
            "content": {"anyOf": [question, {"type": "array", "minItems": 1, "items": _ref("ContentPart")}]},
            "tool_calls": null,
            "tool_call_id": null,
            "function_call": null,
            "audio": null,
        },
        required=["role", "content"],
    )
    policy = _nullable({"enum": list(registry.names())})  # null: unset
    params = _ref("RequestParams")
    _refine(components, ChatExtension, {"policy": policy, "params": params})
    messages = {
        "contains": {"type": "object", "properties": {"role": {"const": "user"}}},
        "description": "the conversation; it has a user turn, and the last one is the question",
    }
    stop_seq = {"type": "string", "minLength": 1, "maxLength": 256}
    stop = {
        "anyOf": [stop_seq, {"type": "array", "maxItems": MAX_STOP_SEQUENCES, "items": stop_seq}, null],
        "description": "the session ends at the first stop sequence in its committed text (cut before it), "
        "finish_reason stop",
    }
    _refine(
        components,
        SessionBody,
        {"question": question, "messages": messages, "stop": stop, "policy": policy, "params": params},
        oneOf=[{"required": ["question"]}, {"required": ["messages"]}],
    )
    param = components["SessionParams"]["properties"]
    nothing = {
        "frequency_penalty": _nullable({"const": 0}),
        "presence_penalty": _nullable({"const": 0}),
        "logit_bias": _nullable({"type": "object", "maxProperties": 0}),
        "logprobs": {"enum": [False, None]},
        "top_logprobs": _nullable({"const": 0}),
        "response_format": _nullable(
            {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"const": "text"}},
                "additionalProperties": False,
            }
        ),
        "tools": _nullable({"type": "array", "maxItems": 0}),
        "tool_choice": {"enum": ["none", None]},
        "functions": _nullable({"type": "array", "maxItems": 0}),
        "function_call": {"enum": ["none", None]},
        "audio": null,
        "modalities": _nullable({"type": "array", "items": {"const": "text"}}),
        "prediction": null,
        "reasoning_effort": null,
        "verbosity": null,
        "web_search_options": null,
    }
    _refine(
        components,
        ChatBody,
        {
            "messages": messages,
            "model": {
                "anyOf": [{"enum": list(models)}, null],
                "description": "one of GET /v1/models; absent or null: the profile (or the default policy)",
            },
            "n": _nullable({"const": 1}),
            **{name: _nullable(param[name]) for name in ("temperature", "top_p", "seed", "max_tokens")},
            "max_completion_tokens": _nullable(param["max_tokens"]),
            "stop": stop,
            **nothing,
        },
    )


def _event_components(
    message_ref: dict[str, Any], chunk_ref: dict[str, Any], error_ref: dict[str, Any]
) -> dict[str, Any]:
    # Open API 3.1 (before itemSchema): the schema of text/event-stream describes one event; its data is
    # JSON text, of the types the handlers encode.
    return {
        "ChatChunkEvent": {
            "type": "object",
            "description": "data: a chat.completion.chunk (its choices' deltas: the role, then each "
            "committed step as reasoning_content, then the answer as content with finish_reason stop or "
            "length and the trigreason member; with stream_options.include_usage every chunk has usage "
            "null and a last chunk with empty choices the usage), an Error when the session fails or times "
            "out, and [DONE] at the end",
            "properties": {
                "data": {
                    "oneOf": [
                        {
                            "type": "string",
                            "contentMediaType": _JSON,
                            "contentSchema": {"oneOf": [chunk_ref, error_ref]},
                        },
                        {"const": "[DONE]"},
                    ]
                }
            },
            "required": ["data"],
        },
        "SessionEvent": {
            "type": "object",
            "description": "event: the kind (requested, committed, finished, failed...), id: its sequence, "
            "data: the message",
            "properties": {
                "id": {"type": "string", "pattern": LAST_EVENT_ID_PATTERN},
                "event": {"enum": list(EVENT_KINDS)},
                "data": {"type": "string", "contentMediaType": _JSON, "contentSchema": message_ref},
            },
            "required": ["id", "event", "data"],
        },
    }


def _schema(body: Body, refs: dict[type, dict[str, Any]]) -> dict[str, Any]:
    if isinstance(body, type):
        return refs[body]
    return _ref(body) if isinstance(body, str) else body


def openapi_document(
    *, auth: bool = False, models: tuple[str, ...] = (), policies: PolicyRegistry | None = None
) -> dict[str, Any]:
    """The document; with ``auth`` the ``/v1/*`` routes need a bearer token (and may answer 401).
    ``models``: the model ids the chat completion takes (GET /v1/models); ``policies``: the registry
    whose policies and parameters requests may name (the built-in ones when ``None``)."""
    registry = policies or PolicyRegistry.builtin()
    bodies = [op.body for op in ROUTES if op.body is not None]
    answers = [b for op in ROUTES for r in op.replies.values() for _, b in r.content if isinstance(b, type)]
    kinds: list[type] = list(dict.fromkeys([*bodies, *answers, ContentPart]))
    extra = [SessionParams, Message, ChatChunk, PolicyInfo, *(p.params for p in registry)]
    rendered, components = msgspec.json.schema_components([*kinds, *extra], ref_template=_REF)
    refs = dict(zip(kinds, rendered, strict=False))
    message_ref, chunk_ref = rendered[len(kinds) + 1], rendered[len(kinds) + 2]
    components["RequestParams"] = _request_params(components, registry)
    _refine_requests(components, registry, models)
    for old, new in _RENAMED.items():
        components[new] = components.pop(old)
    for kind in refs:
        if kind.__name__ in _RENAMED:
            refs[kind] = _ref(_RENAMED[kind.__name__])
    components.update(_event_components(message_ref, chunk_ref, refs[Error]))

    paths: dict[str, Any] = {}
    for op in ROUTES:
        v1 = op.path.startswith("/v1/")
        replies = dict(op.replies)
        if auth and v1:
            replies[401] = Reply("missing or bad bearer token")
        responses: dict[str, Any] = {}
        for status in sorted(replies):
            reply = replies[status]
            out: dict[str, Any] = {
                "description": reply.description,
                "content": {media: {"schema": _schema(body, refs)} for media, body in reply.content},
            }
            if reply.headers:
                out["headers"] = dict(reply.headers)
            responses[str(status)] = out
        operation: dict[str, Any] = {"operationId": op.operation_id}
        if op.summary:
            operation["summary"] = op.summary
        if auth and not v1:
            operation["security"] = []
        if op.parameters:
            operation["parameters"] = [_PARAMETERS[name] for name in op.parameters]
        if op.body is not None:
            operation["requestBody"] = {"required": True, "content": {_JSON: {"schema": refs[op.body]}}}
        operation["responses"] = responses
        paths.setdefault(op.path, {})[op.method.lower()] = operation

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "TrigReason gateway", "version": "1"},
        "paths": paths,
        "components": {"schemas": components},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
