"""The gateway's OpenAPI 3.1 document: what it accepts and every answer it can give, route by route
(``tests/services/test_gateway_schemathesis.py`` holds the gateway to it). Parameter and event schemas
come from the msgspec Structs."""

from __future__ import annotations

from typing import Any

import msgspec

from trigreason.proto import MAX_QUESTION_CHARS, MAX_STOP_SEQUENCES, V1_FLAT_PARAMS, Message, SessionParams
from trigreason.services.trigger_evaluator.policies import PolicyInfo, PolicyRegistry

__all__ = [
    "IDEMPOTENCY_KEY_PATTERN",
    "LAST_EVENT_ID_PATTERN",
    "MAX_QUESTION_CHARS",
    "NOT_BLANK_PATTERN",
    "SESSION_ID_PATTERN",
    "openapi_document",
]

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"  # printable ASCII, no spaces
LAST_EVENT_ID_PATTERN = r"^[0-9]{1,19}$"
# At least one character that is not (ASCII) white space; spelled out, as \\S differs between regex engines.
NOT_BLANK_PATTERN = r"[^\t\n\v\f\r ]"


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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if headers:
        out["headers"] = headers
    return out


def _ok(description: str, schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}


def openapi_document(
    *, auth: bool = False, models: tuple[str, ...] = (), policies: PolicyRegistry | None = None
) -> dict[str, Any]:
    """The document; with ``auth`` the ``/v1/*`` routes need a bearer token (and may answer 401).
    ``models``: the model ids the chat completion takes (GET /v1/models); ``policies``: the registry
    whose policies and parameters requests may name (the built-in ones when ``None``)."""
    registry = policies or PolicyRegistry.builtin()
    kinds = [policy.params for policy in registry]
    (_, message_ref, *_), components = msgspec.json.schema_components(
        [SessionParams, Message, PolicyInfo, *kinds], ref_template="#/components/schemas/{name}"
    )
    components["RequestParams"] = _request_params(components, registry)
    policy = {"anyOf": [{"enum": list(registry.names())}, {"type": "null"}]}  # null: unset
    components["Error"] = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
    }
    question = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_QUESTION_CHARS,
        "pattern": NOT_BLANK_PATTERN,
    }
    components["ChatMessage"] = {
        "type": "object",
        "description": "A turn: system (or developer) messages, user and assistant turns; the "
        "session answers the last user turn, earlier assistant turns are context. content: a string or "
        "text parts (joined by newlines, at most the question's length in all: beyond it a 422; another "
        "part type is a 422 unsupported_content). name: accepted, no effect. Tool calls and audio are "
        "refused.",
        "required": ["role", "content"],
        "additionalProperties": False,
        "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant"]},
            "content": {
                "anyOf": [
                    question,
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "text"],
                            "properties": {
                                "type": {"const": "text"},
                                "text": question,
                            },
                        },
                    },
                ]
            },
            "name": {"type": ["string", "null"]},
            "tool_calls": {"type": "null"},
            "tool_call_id": {"type": "null"},
            "function_call": {"type": "null"},
            "audio": {"type": "null"},
        },
    }
    messages = {
        "type": "array",
        "minItems": 1,
        "items": _ref("ChatMessage"),
        "contains": {"type": "object", "properties": {"role": {"const": "user"}}},
        "description": "the conversation; it has a user turn, and the last one is the question",
    }
    stop_seq = {"type": "string", "minLength": 1, "maxLength": 256}
    stop = {
        "anyOf": [
            stop_seq,
            {"type": "array", "maxItems": MAX_STOP_SEQUENCES, "items": stop_seq},
            {"type": "null"},
        ],
        "description": "the session ends at the first stop sequence in its committed text (cut before it), "
        "finish_reason stop",
    }
    components["SessionRequest"] = {
        "type": "object",
        "description": "question, or in its place messages: a conversation whose last user turn is the "
        "question",
        "oneOf": [{"required": ["question"]}, {"required": ["messages"]}],
        "properties": {
            "question": question,
            "messages": messages,
            "stop": stop,
            "policy": policy,
            "params": _ref("RequestParams"),
        },
        "additionalProperties": False,
    }
    components["SessionAccepted"] = {
        "type": "object",
        "properties": {"session_id": {"type": "string", "pattern": SESSION_ID_PATTERN}},
        "required": ["session_id"],
    }
    components["SessionView"] = {
        "type": "object",
        "description": "A projection of the session's events up to the last one. Where the session's "
        "request has expired before its other events, question, policy and params are absent.",
        "properties": {
            "session_id": {"type": "string"},
            "status": {"enum": ["queued", "running", "finished", "failed"]},
            "question": {"type": "string"},
            "conversation": {
                "type": "array",
                "description": "the conversation apart from the steps: system messages and earlier turns "
                "(context), the question last",
                "items": {
                    "type": "object",
                    "properties": {
                        "role": {"enum": ["system", "user", "assistant"]},
                        "content": {"type": "string"},
                    },
                    "required": ["role", "content"],
                },
            },
            "policy": {"type": "string"},
            "answer": {"type": ["string", "null"]},
            "end_reason": {"type": ["string", "null"]},
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "role": {"enum": ["srm", "lrm"]},
                        "text": {"type": "string"},
                        "tokens": {"type": "integer"},
                        "trigger": {"type": ["string", "null"]},
                    },
                    "required": ["index", "role", "text", "tokens", "trigger"],
                },
            },
            "stats": _ref("SessionStats"),
            "params": _ref("RequestParams"),
        },
        "required": ["session_id", "status"],
    }
    param = components["SessionParams"]["properties"]

    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [schema, {"type": "null"}]}

    usage = {
        "type": "object",
        "description": "prompt_tokens: the prompt the session's first backend call read; completion_tokens: "
        "the committed steps' tokens; total_tokens: their sum",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "completion_tokens": {"type": "integer"},
            "prompt_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        },
    }
    null: dict[str, Any] = {"type": "null"}
    components["ChatRequest"] = {
        "type": "object",
        "description": "OpenAI's chat completion request. Every member is honoured, refused unless at the "
        "value that does nothing (a 422 unsupported_field naming it), or accepted with no effect (user, "
        "metadata, store, service_tier, parallel_tool_calls, prompt_cache_key, safety_identifier, "
        "stream_options.include_obfuscation, messages[].name); any other member is a 422. model is one of "
        "GET /v1/models (another is a 404 model_not_found): a policy, or the gateway's profile. temperature, "
        "top_p, seed and max_tokens (or max_completion_tokens) set the session parameters of those names, "
        "trigreason.params over them. docs/chat.md has the table.",
        "required": ["messages"],
        "additionalProperties": False,
        "properties": {
            "messages": messages,
            "model": {
                "anyOf": [{"enum": list(models)}, {"type": "null"}],
                "description": "one of GET /v1/models; absent or null: the profile (or the default policy)",
            },
            "stream": {"type": ["boolean", "null"]},
            "stream_options": nullable(
                {
                    "type": "object",
                    "description": "include_usage: a last chunk with empty choices carries the usage",
                    "properties": {
                        "include_usage": {"type": "boolean"},
                        "include_obfuscation": {"type": ["boolean", "null"]},
                    },
                    "additionalProperties": False,
                }
            ),
            "n": nullable({"const": 1}),
            "temperature": nullable(param["temperature"]),
            "top_p": nullable(param["top_p"]),
            "seed": nullable(param["seed"]),
            "max_tokens": nullable(param["max_tokens"]),
            "max_completion_tokens": nullable(param["max_tokens"]),
            "stop": stop,
            "frequency_penalty": nullable({"const": 0}),
            "presence_penalty": nullable({"const": 0}),
            "logit_bias": nullable({"type": "object", "maxProperties": 0}),
            "logprobs": {"enum": [False, None]},
            "top_logprobs": nullable({"const": 0}),
            "response_format": nullable(
                {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"const": "text"}},
                    "additionalProperties": False,
                }
            ),
            "tools": nullable({"type": "array", "maxItems": 0}),
            "tool_choice": {"enum": ["none", None]},
            "functions": nullable({"type": "array", "maxItems": 0}),
            "function_call": {"enum": ["none", None]},
            "audio": null,
            "modalities": nullable({"type": "array", "items": {"const": "text"}}),
            "prediction": null,
            "reasoning_effort": null,
            "verbosity": null,
            "web_search_options": null,
            "parallel_tool_calls": {"type": ["boolean", "null"]},
            "user": {"type": ["string", "null"]},
            "metadata": nullable({"type": "object"}),
            "store": {"type": ["boolean", "null"]},
            "service_tier": {"type": ["string", "null"]},
            "prompt_cache_key": {"type": ["string", "null"]},
            "safety_identifier": {"type": ["string", "null"]},
            "trigreason": {
                "type": "object",
                "description": "TrigReason's own parameters, over model and OpenAI's members",
                "properties": {"policy": policy, "params": _ref("RequestParams")},
                "additionalProperties": False,
            },
        },
    }
    extension = {
        "type": "object",
        "description": "answer: the \\boxed{} value (null without one); end_reason: why the session ended",
        "properties": {
            "session_id": {"type": "string"},
            "answer": {"type": ["string", "null"]},
            "end_reason": {"type": "string"},
            "stats": _ref("SessionStats"),
        },
        "required": ["session_id", "answer", "end_reason", "stats"],
    }
    components["ChatCompletion"] = {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage", "trigreason"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": {"const": 0},
                        "message": {
                            "type": "object",
                            "required": ["role", "content", "reasoning_content"],
                            "description": "content: the committed step that holds the final answer, or "
                            "without one the last committed step; reasoning_content: every committed step",
                            "properties": {
                                "role": {"const": "assistant"},
                                "content": {"type": "string"},
                                "reasoning_content": {"type": "string"},
                            },
                        },
                        "finish_reason": {"enum": ["stop", "length"]},
                    },
                },
            },
            "usage": usage,
            "trigreason": extension,
        },
    }
    components["Model"] = {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"enum": list(models)},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    }
    # Open API 3.1 (before itemSchema): the schema of text/event-stream describes one event.
    components["ChatChunkEvent"] = {
        "type": "object",
        "description": "data: a chat.completion.chunk (its choices' deltas: the role, then each committed "
        "step as reasoning_content, then the answer as content with finish_reason stop or length and the "
        "trigreason member; with stream_options.include_usage every chunk has usage null and a last chunk "
        'with empty choices the usage), an error object {"error": {"code", "message"}} when the session '
        "fails or times out, and [DONE] at the end",
        "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
        "required": ["data"],
    }
    components["SessionEvent"] = {
        "type": "object",
        "description": "event: the kind (requested, committed, finished, failed...), id: its sequence, "
        "data: the message",
        "properties": {
            "id": {"type": "string", "pattern": LAST_EVENT_ID_PATTERN},
            "event": {"type": "string"},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": message_ref},
        },
        "required": ["id", "event", "data"],
    }
    sid = {
        "name": "session_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
    }
    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "A retried request with the same key (and the same bearer token) gets the same "
        "session, for as long as sessions are kept; the same key with a different question or different "
        "parameters is a 409.",
        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
    }
    event_id = {"type": "string", "pattern": LAST_EVENT_ID_PATTERN}
    v1_errors: dict[str, Any] = {"401": _error("missing or bad bearer token")} if auth else {}
    post_errors = {
        "400": _error("body is not JSON, or a bad Idempotency-Key"),
        **v1_errors,
        "409": _error("Idempotency-Key reused for a different request"),
        "413": _error("body larger than 1 MiB"),
        "415": _error("body is not application/json"),
        "422": _error("invalid request: a field, a parameter (unknown names too), a blank question"),
        "503": _error("NATS unavailable"),
    }
    created_headers = {
        "Location": {"description": "the session", "schema": {"type": "string"}, "required": True},
        "Idempotent-Replayed": {
            "description": "true when an earlier request with this Idempotency-Key made the session",
            "schema": {"type": "string"},
        },
    }
    open_route: dict[str, Any] = {"security": []} if auth else {}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "TrigReason gateway", "version": "1"},
        "paths": {
            "/v1/sessions": {
                "post": {
                    "operationId": "createSession",
                    "summary": "Start a session",
                    "parameters": [idempotency_key],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("SessionRequest")}},
                    },
                    "responses": {
                        "202": {**_ok("accepted", _ref("SessionAccepted")), "headers": created_headers},
                        **post_errors,
                    },
                }
            },
            "/v1/sessions/{session_id}": {
                "get": {
                    "operationId": "getSession",
                    "summary": "A session's state: steps, answer, statistics",
                    "parameters": [sid],
                    "responses": {
                        "200": _ok("the session", _ref("SessionView")),
                        "400": _error("not a session id"),
                        **v1_errors,
                        "404": _error("unknown or expired session"),
                        "503": _error("NATS unavailable"),
                    },
                }
            },
            "/v1/sessions/{session_id}/events": {
                "get": {
                    "operationId": "sessionEvents",
                    "summary": "The session's events as Server-Sent Events (id: the event's sequence, event: "
                    "requested|committed|finished|failed, data: the message), replayable from the start, "
                    "resumable with Last-Event-ID, until the terminal event. Each step index comes once. "
                    "An idle stream gets a comment line every TRIGREASON_SSE_KEEPALIVE_S seconds.",
                    "parameters": [
                        sid,
                        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": event_id},
                        {"name": "last_event_id", "in": "query", "required": False, "schema": event_id},
                    ],
                    "responses": {
                        "200": _ok("the events", _ref("SessionEvent"), "text/event-stream"),
                        "400": _error("not a session id, or a bad Last-Event-ID"),
                        **v1_errors,
                        "404": _error("unknown or expired session"),
                        "429": _error("too many open streams", _RETRY_AFTER),
                        "503": _error("NATS unavailable"),
                    },
                }
            },
            "/v1/chat/completions": {
                "post": {
                    "operationId": "chatCompletions",
                    "summary": "OpenAI-compatible chat completion (streaming and not); steps come as "
                    "reasoning_content, the answer's step as content. A stream ends with data: [DONE]; a "
                    'failure in it is a chunk {"error": {"code", "message"}} before [DONE].',
                    "parameters": [idempotency_key],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ChatRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "the completion, or with stream: chunks as Server-Sent Events",
                            "content": {
                                "application/json": {"schema": _ref("ChatCompletion")},
                                "text/event-stream": {"schema": _ref("ChatChunkEvent")},
                            },
                        },
                        **post_errors,
                        "404": _error("model_not_found: not a model of GET /v1/models"),
                        "422": _error(
                            "invalid request: a field, a parameter (unknown names too), a blank turn, a "
                            "conversation without a user turn or with other roles (unsupported_messages), a "
                            "content part other than text (unsupported_content), a conversation beyond the "
                            "context limit (context_too_long), a member asking for what "
                            "TrigReason does not do (unsupported_field, naming it), a request the backend "
                            "refused (request_refused)"
                        ),
                        "429": _error("too many open streams", _RETRY_AFTER),
                        "502": _error("the session failed (other than request_refused)"),
                        "504": _error("the session did not end within TRIGREASON_SESSION_TIMEOUT_S"),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "The model ids chat completions take: the gateway's profile (if it has one), "
                    "then each policy",
                    "responses": {
                        "200": _ok(
                            "OpenAI's model list",
                            {
                                "type": "object",
                                "required": ["object", "data"],
                                "properties": {
                                    "object": {"const": "list"},
                                    "data": {"type": "array", "items": _ref("Model")},
                                },
                            },
                        ),
                        **v1_errors,
                    },
                }
            },
            "/v1/policies": {
                "get": {
                    "operationId": "listPolicies",
                    "summary": "The registered trigger policies with their parameters, defaults and bounds "
                    "(trigreason policies --json)",
                    "responses": {
                        "200": _ok(
                            "the policies",
                            {
                                "type": "object",
                                "required": ["policies"],
                                "properties": {"policies": {"type": "array", "items": _ref("PolicyInfo")}},
                            },
                        ),
                        **v1_errors,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    **open_route,
                    "responses": {"200": _ok("alive", {"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    **open_route,
                    "responses": {
                        "200": _ok("connected to NATS", {"type": "object"}),
                        "503": _error("not connected to NATS"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    **open_route,
                    "responses": {"200": _ok("Prometheus metrics", {"type": "string"}, "text/plain")},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    **open_route,
                    "responses": {"200": _ok("this document", {"type": "object"})},
                }
            },
        },
        "components": {"schemas": components},
    }
    if auth:
        components_all: dict[str, Any] = doc["components"]
        components_all["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
