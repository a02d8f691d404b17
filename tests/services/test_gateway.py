"""The HTTP gateway in front of a real bus and the services (scripted backends: plumbing, not models)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all
from tests.support import step
from trigreason.eval import GatewayExecutor
from trigreason.proto import SessionParams
from trigreason.services.gateway import GatewaySettings, make_app
from trigreason.services.runtime import Bus

FINAL = step("So \\boxed{7}.")


class Gateway:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = session


async def _serve(cluster: Cluster, settings: GatewaySettings) -> AsyncIterator[Gateway]:
    bus = await Bus.connect(cluster.settings, name="gateway", tracer=cluster.tracer)
    runner = web.AppRunner(make_app(bus, settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        yield Gateway(f"http://127.0.0.1:{port}", http)
    await runner.cleanup()
    await bus.close()


@pytest.fixture
async def gateway(cluster: Cluster) -> AsyncIterator[Gateway]:
    await start_all(
        cluster,
        ScriptedBackend("srm", [step("We add 3 and 4."), FINAL], default=FINAL),
        ScriptedBackend("lrm", [step("Prime.")], default=FINAL),
    )
    async for g in _serve(cluster, GatewaySettings()):
        yield g


async def _sse(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with http.get(url, headers=headers or {}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if current:
                    events.append(current)
                current = {}
            elif line.startswith(":"):
                continue
            else:
                key, _, value = line.partition(": ")
                current[key] = json.loads(value) if key == "data" else value
    return events


async def test_session_lifecycle_and_sse_replay(gateway: Gateway) -> None:
    body = {"question": "What is 3 + 4?", "policy": "trigreason", "params": {"priming_steps": 1, "rho": 1.0}}
    async with gateway.http.post(f"{gateway.url}/v1/sessions", json=body) as resp:
        assert resp.status == 202
        sid = (await resp.json())["session_id"]
        assert resp.headers["Location"] == f"/v1/sessions/{sid}"
    events = await _sse(gateway.http, f"{gateway.url}/v1/sessions/{sid}/events")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "requested"
    assert kinds[-1] == "finished"
    assert [e["data"]["type"] for e in events if e["event"] == "committed"] == ["StepCommitted.v1"] * 3
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)

    # Replayable: a second subscriber after the end sees exactly the same history.
    again = await _sse(gateway.http, f"{gateway.url}/v1/sessions/{sid}/events")
    assert again == events
    # Resumable: from an event id on, only what came after it.
    resumed = await _sse(
        gateway.http, f"{gateway.url}/v1/sessions/{sid}/events", {"Last-Event-ID": events[2]["id"]}
    )
    assert resumed == events[3:]

    async with gateway.http.get(f"{gateway.url}/v1/sessions/{sid}") as resp:
        view = await resp.json()
    assert view["status"] == "finished"
    assert view["answer"] == "7"
    assert [(s["role"], s["trigger"]) for s in view["steps"]] == [
        ("lrm", "priming"),
        ("srm", None),
        ("srm", None),
    ]
    assert view["stats"]["srm_tokens"] + view["stats"]["lrm_tokens"] == sum(
        s["tokens"] for s in view["steps"]
    )


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"{not json", 400, "bad_json"),
        (b'{"question": 5}', 422, "invalid_request"),
        (b'{"question": ""}', 422, "invalid_request"),
        (b'{"question": "   "}', 422, "invalid_request"),
        (json.dumps({"question": "x" * 20_001}).encode(), 422, "invalid_request"),
        (b'{"question": "q", "policy": "magic"}', 422, "invalid_request"),
        (b'{"question": "q", "params": {"rho": 2}}', 422, "invalid_params"),
        (b'{"question": "q", "params": {"k": 0}}', 422, "invalid_params"),
        (b'{"question": "q", "params": {"tau": "high"}}', 422, "invalid_params"),
        (b'{"question": "q", "colour": "red"}', 422, "invalid_request"),
    ],
)
async def test_bad_requests_get_a_4xx_with_a_json_error(
    gateway: Gateway, payload: bytes, status: int, code: str
) -> None:
    async with gateway.http.post(
        f"{gateway.url}/v1/sessions", data=payload, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == status
        err = (await resp.json())["error"]
        assert err["code"] == code
        assert err["message"]


async def test_unknown_session_and_routes(gateway: Gateway) -> None:
    async with gateway.http.get(f"{gateway.url}/v1/sessions/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    async with gateway.http.get(f"{gateway.url}/v1/sessions/a.b") as resp:
        assert resp.status == 400
    async with gateway.http.get(f"{gateway.url}/v2/whatever") as resp:
        assert resp.status == 404
        assert "error" in await resp.json()


async def test_health_readiness_metrics_openapi(gateway: Gateway) -> None:
    for path in ("/healthz", "/readyz"):
        async with gateway.http.get(gateway.url + path) as resp:
            assert resp.status == 200
    async with gateway.http.get(f"{gateway.url}/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/sessions", "/v1/sessions/{session_id}/events", "/v1/chat/completions"} <= set(doc["paths"])
    async with gateway.http.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    assert "trigreason_gateway_requests_total" in text


async def test_chat_completions(gateway: Gateway) -> None:
    body = {
        "messages": [{"role": "user", "content": "What is 3 + 4?"}],
        "trigreason": {"params": {"priming_steps": 0}},
    }
    async with gateway.http.post(f"{gateway.url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        out = await resp.json()
    msg = out["choices"][0]["message"]
    assert msg["content"] == "So \\boxed{7}."  # the step that holds the answer
    assert out["trigreason"]["answer"] == "7"
    assert "We add 3 and 4." in msg["reasoning_content"]

    chunks: list[dict[str, Any]] = []
    async with gateway.http.post(f"{gateway.url}/v1/chat/completions", json={**body, "stream": True}) as resp:
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
            if line == "data: [DONE]":
                break
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert any("reasoning_content" in d for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert deltas[-1]["content"] == "So \\boxed{7}."
    assert chunks[-1]["trigreason"]["answer"] == "7"


async def test_bearer_token_auth(cluster: Cluster) -> None:
    await start_all(cluster, ScriptedBackend("srm", default=FINAL), ScriptedBackend("lrm", default=FINAL))
    async for g in _serve(cluster, GatewaySettings(api_tokens=("s3cret",))):
        async with g.http.post(f"{g.url}/v1/sessions", json={"question": "q"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"
        async with g.http.post(
            f"{g.url}/v1/sessions", json={"question": "q"}, headers={"Authorization": "Bearer s3cret"}
        ) as resp:
            assert resp.status == 202
        async with g.http.get(f"{g.url}/healthz") as resp:  # probes stay open
            assert resp.status == 200


async def test_one_connected_trace_per_session_with_a_span_per_handoff(cluster: Cluster) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cluster.tracer = provider.get_tracer("test")
    srm = [step("We add 3 and 4.", [-0.001] * 4), step("Adding gives 7."), FINAL]
    await start_all(
        cluster, ScriptedBackend("srm", srm), ScriptedBackend("lrm", [step("Prime."), step("3 + 4 = 7.")])
    )
    async for g in _serve(cluster, GatewaySettings()):
        body = {"question": "What is 3 + 4?", "params": {"priming_steps": 1}}
        async with g.http.post(f"{g.url}/v1/sessions", json=body) as resp:
            sid = (await resp.json())["session_id"]
        events = await _sse(g.http, f"{g.url}/v1/sessions/{sid}/events")
        stats = events[-1]["data"]["stats"]
    await cluster.close()
    spans = exporter.get_finished_spans()
    session_spans = [s for s in spans if s.attributes and s.attributes.get("trigreason.session_id") == sid]
    trace_ids = {s.context.trace_id for s in session_spans if s.context}
    assert len(trace_ids) == 1, "every handoff of the session belongs to one trace"
    (trace_id,) = trace_ids
    in_trace = [s for s in spans if s.context and s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace if s.context}
    roots = [s for s in in_trace if s.parent is None]
    assert len(roots) == 1
    assert roots[0].kind == SpanKind.PRODUCER  # the gateway's publish of the request
    assert all(s.parent is None or s.parent.span_id in by_id for s in in_trace), "no dangling parents"
    kinds = [s.kind for s in in_trace]
    producers, consumers = kinds.count(SpanKind.PRODUCER), kinds.count(SpanKind.CONSUMER)
    # Consumed handoffs: the request and the session's deadline timer (delivered once when armed, then
    # held back until due); per SRM step its command, the step (evaluator) and the verdict (orchestrator);
    # per LRM step its command and the step. Committed/finished events are published too, but only the
    # gateway reads them, outside any consumer group.
    assert consumers == 2 + 3 * stats["srm_calls"] + 2 * stats["lrm_calls"]
    assert producers == consumers + len([e for e in events if e["event"] in ("committed", "finished")])
    client = [s for s in in_trace if s.kind == SpanKind.CLIENT]
    assert len(client) == stats["srm_calls"] + stats["lrm_calls"]
    assert {s.attributes["trigreason.role"] for s in client if s.attributes} == {"srm", "lrm"}
    assert all(
        s.attributes and s.attributes["messaging.system"] == "nats"
        for s in in_trace
        if s.kind == SpanKind.CONSUMER
    )
    assert any(s.name == "trigger-evaluator evaluate" for s in in_trace)
    assert (
        sum(s.name == "orchestrator decide" for s in in_trace) == 1 + stats["lrm_steps"] + stats["srm_calls"]
    )


async def test_eval_through_the_gateway_gives_the_session_as_it_ran(gateway: Gateway) -> None:
    executor = GatewayExecutor(gateway.url)
    try:
        params = SessionParams(policy="trigreason", priming_steps=1, rho=1.0)
        outcome = await executor.solve("What is 3 + 4?", params, "ignored-the-gateway-picks-ids")
    finally:
        await executor.aclose()
    assert outcome.answer == "7"
    assert outcome.end_reason == "final_answer"
    assert [(s.role, s.trigger) for s in outcome.steps] == [
        ("lrm", "priming"),
        ("srm", None),
        ("srm", None),
    ]
    assert sum(s.tokens for s in outcome.steps) == outcome.stats.srm_tokens + outcome.stats.lrm_tokens
    async with gateway.http.get(f"{gateway.url}/v1/sessions/{outcome.session_id}") as resp:
        assert (await resp.json())["status"] == "finished"


async def test_a_profile_gives_defaults_that_a_request_overrides(cluster: Cluster) -> None:
    await start_all(cluster, ScriptedBackend("srm", default=FINAL), ScriptedBackend("lrm", default=FINAL))
    settings = GatewaySettings(default_params={"priming_steps": 0, "rho": 0.5, "max_tokens": 64})
    async for g in _serve(cluster, settings):
        async with g.http.post(
            f"{g.url}/v1/sessions", json={"question": "q", "params": {"rho": 0.9}}
        ) as resp:
            sid = (await resp.json())["session_id"]
        await _sse(g.http, f"{g.url}/v1/sessions/{sid}/events")
        async with g.http.get(f"{g.url}/v1/sessions/{sid}") as resp:
            view = await resp.json()
        assert (view["params"]["priming_steps"], view["params"]["max_tokens"]) == (0, 64)  # from the profile
        assert view["params"]["rho"] == 0.9  # from the request
        # A profile's value out of range is still the request's problem: a 4xx, not a crash.
        async with g.http.post(f"{g.url}/v1/sessions", json={"question": "q", "params": {"k": 0}}) as resp:
            assert resp.status == 422
