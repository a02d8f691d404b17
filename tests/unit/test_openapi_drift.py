"""The OpenAPI document against what the gateway serves: its paths and methods are the route table's, the
request bodies name exactly the fields the gateway's msgspec types decode, and the parameters are the
policy registry's."""

from __future__ import annotations

from typing import Any
from unittest import mock

import msgspec
from aiohttp import web

from trigreason.proto import EVENT_KINDS, Message
from trigreason.services.gateway import (
    ROUTES,
    ChatBody,
    ChatChunk,
    Error,
    Gateway,
    GatewaySettings,
    SessionList,
    Trace,
    make_app,
)
from trigreason.services.trigger_evaluator.policies import PolicyRegistry

REF = "#/components/schemas/{name}"


def _app() -> web.Application:
    return make_app(mock.MagicMock(), GatewaySettings())  # nothing is connected


def _document(app: web.Application | None = None) -> dict[str, Any]:
    gateway = next(v for v in (app or _app()).values() if isinstance(v, Gateway))
    doc: dict[str, Any] = gateway.document  # the browser adds its routes to it
    return doc


def test_the_paths_are_the_route_table() -> None:
    app = _app()
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        routes.add((route.method, info.get("path") or info.get("formatter")))
    documented = {(m.upper(), path) for path, ops in _document(app)["paths"].items() for m in ops}
    assert routes == documented


def test_the_chat_request_is_the_chat_body_struct() -> None:
    schema = _document()["components"]["schemas"]["ChatRequest"]
    fields = {f.encode_name for f in msgspec.structs.fields(ChatBody)}
    assert set(schema["properties"]) == fields


def test_the_request_parameters_are_the_registrys() -> None:
    doc = _document()["components"]["schemas"]
    params = doc["RequestParams"]
    registry = PolicyRegistry.builtin()
    assert params["additionalProperties"] is False
    assert set(params["properties"]["policy_params"]["properties"]) == registry.param_names()
    assert registry.param_names() <= set(params["properties"])
    assert params["properties"]["policy"]["anyOf"][0]["enum"] == list(registry.names())
    for policy in registry:  # each policy's own Struct, as msgspec renders it
        assert doc[policy.params.__name__] == policy.info().params_schema


def test_the_answers_are_the_structs_the_handlers_encode() -> None:
    """Each JSON answer of the route table is msgspec's rendering of the Struct its handler encodes, and
    every error is the Error Struct."""
    doc = _document()
    schemas = doc["components"]["schemas"]
    checked = 0
    for op in ROUTES:
        responses = doc["paths"][op.path][op.method.lower()]["responses"]
        assert set(responses) >= {str(status) for status in op.replies}
        for status, reply in op.replies.items():
            for media, body in reply.content:
                if not isinstance(body, type):
                    continue
                (ref,), rendered = msgspec.json.schema_components([body], ref_template=REF)
                assert responses[str(status)]["content"][media]["schema"] == ref
                for name, schema in rendered.items():
                    assert schemas[name] == schema, name
                checked += 1
    assert checked > len(ROUTES)  # the errors and the 2xx answers


def test_the_request_bodies_are_the_structs_the_handlers_decode() -> None:
    """Each request body is its Struct's rendering, narrowed field by field (never a field it lacks)."""
    doc = _document()
    schemas = doc["components"]["schemas"]
    for op in ROUTES:
        if op.body is None:
            continue
        ref = doc["paths"][op.path][op.method.lower()]["requestBody"]["content"]["application/json"]["schema"]
        schema = schemas[ref["$ref"].rsplit("/", 1)[1]]
        assert set(schema["properties"]) == {f.encode_name for f in msgspec.structs.fields(op.body)}
        assert schema["additionalProperties"] is False  # forbid_unknown_fields


def test_the_browsers_answers_are_its_structs() -> None:
    doc = _document()
    _, rendered = msgspec.json.schema_components([SessionList, Trace], ref_template=REF)
    for name, schema in rendered.items():
        assert doc["components"]["schemas"][name] == schema
    listing = doc["paths"]["/v1/sessions"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listing["schema"] == {"$ref": REF.format(name="SessionList")}


def test_the_browsers_routes_are_in_the_route_table() -> None:
    """The browser's pages and JSON routes come from the same table as the gateway's: one owner each."""
    owners = {(op.method, op.path): op.owner for op in ROUTES}
    assert owners[("GET", "/v1/sessions")] == "browser"
    assert owners[("GET", "/v1/sessions/{session_id}/trace")] == "browser"
    assert owners[("GET", "/")] == "browser"
    assert owners[("POST", "/v1/sessions")] == "gateway"
    limit = _document()["paths"]["/v1/sessions"]["get"]["parameters"]
    assert [p["name"] for p in limit] == ["limit"]


def test_the_event_streams_data_are_the_structs_the_handlers_encode() -> None:
    """A chat stream's data is a ChatChunk or an Error (or [DONE]); a session stream's is a Message, under
    one of the event kinds."""
    doc = _document()
    schemas = doc["components"]["schemas"]
    chat = schemas["ChatChunkEvent"]["properties"]["data"]["oneOf"]
    assert chat[0]["contentSchema"] == {
        "oneOf": [{"$ref": REF.format(name="ChatChunk")}, {"$ref": REF.format(name="Error")}]
    }
    assert {"const": "[DONE]"} in chat
    _, rendered = msgspec.json.schema_components([ChatChunk, Error], ref_template=REF)
    for name, schema in rendered.items():
        assert schemas[name] == schema, name
    session = schemas["SessionEvent"]["properties"]
    assert session["event"] == {"enum": list(EVENT_KINDS)}
    (message,), _ = msgspec.json.schema_components([Message], ref_template=REF)
    assert session["data"]["contentSchema"] == message
