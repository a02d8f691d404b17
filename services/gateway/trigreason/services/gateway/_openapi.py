"""The gateway's OpenAPI 3.1 document; request and event schemas come from the msgspec Structs."""

from __future__ import annotations

from typing import Any

import msgspec

from trigreason.proto import Message, SessionParams

__all__ = ["openapi_document"]


def openapi_document() -> dict[str, Any]:
    (params_ref, message_ref), components = msgspec.json.schema_components(
        [SessionParams, Message], ref_template="#/components/schemas/{name}"
    )
    error = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                "required": ["code", "message"],
            }
        },
    }
    components["Error"] = error
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    session_request = {
        "type": "object",
        "required": ["question"],
        "properties": {
            "question": {"type": "string", "minLength": 1, "maxLength": 20000},
            "policy": {"type": "string", "enum": ["trigreason", "specreason", "lrm-only", "srm-only"]},
            "params": params_ref,
        },
        "additionalProperties": False,
    }
    sid = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "TrigReason gateway", "version": "1"},
        "paths": {
            "/v1/sessions": {
                "post": {
                    "summary": "Start a session",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": session_request}},
                    },
                    "responses": {
                        "202": {
                            "description": "accepted",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"session_id": {"type": "string"}},
                                    }
                                }
                            },
                        },
                        "400": {"description": "bad JSON", **err},
                        "401": {"description": "missing or bad bearer token", **err},
                        "422": {"description": "invalid request", **err},
                    },
                }
            },
            "/v1/sessions/{session_id}": {
                "get": {
                    "summary": "A session's state: steps, answer, statistics",
                    "parameters": [sid],
                    "responses": {
                        "200": {"description": "the session"},
                        "404": {"description": "unknown", **err},
                    },
                }
            },
            "/v1/sessions/{session_id}/events": {
                "get": {
                    "summary": "The session's events as Server-Sent Events, replayable from the start, "
                    "resumable with Last-Event-ID",
                    "parameters": [sid],
                    "responses": {
                        "200": {
                            "description": "text/event-stream of messages",
                            "content": {"text/event-stream": {"schema": message_ref}},
                        },
                        "404": {"description": "unknown", **err},
                    },
                }
            },
            "/v1/chat/completions": {
                "post": {
                    "summary": "OpenAI-compatible chat completion (streaming and not); steps stream as "
                    "reasoning_content",
                    "responses": {
                        "200": {"description": "completion"},
                        "422": {"description": "invalid", **err},
                    },
                }
            },
            "/healthz": {"get": {"responses": {"200": {"description": "alive"}}}},
            "/readyz": {
                "get": {"responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}
            },
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus metrics"}}}},
        },
        "components": {"schemas": components},
    }
