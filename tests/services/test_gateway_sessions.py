"""The gateway's sessions you can trust (issue 11): streams that outlive slow steps, readers that pass each
step on once, JSON errors for everything, bounded streams, idempotent requests. Real nats-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all
from tests.support import step
from trigreason.eval import GatewayExecutor
from trigreason.proto import (
    EVENT_STREAM,
    ConfigError,
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionStats,
    StepCommitted,
    encode,
    event_filter,
    event_subject,
)
from trigreason.services.gateway import OPEN_STREAMS, GatewaySettings, idempotent_session_id, make_app
from trigreason.services.runtime import Bus
from trigreason.services.trigger_evaluator.policies import PolicyRegistry
from trigreason.services.worker.backends import Generation, GenerationRequest

pytestmark = pytest.mark.timeout(60)

FINAL = step("So \\boxed{7}.")


class SlowBackend(ScriptedBackend):
    """A scripted backend whose every step takes ``delay_s``: a CPU LRM thinking."""

    def __init__(self, name: str, delay_s: float, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.delay_s = delay_s

    async def generate(self, request: GenerationRequest) -> Generation:
        await asyncio.sleep(self.delay_s)
        return await super().generate(request)


class Gateway:
    def __init__(self, url: str, http: aiohttp.ClientSession, bus: Bus, app: web.Application) -> None:
        self.url = url
        self.http = http
        self.bus = bus  # the gateway's own connection
        self.app = app

    @property
    def open_streams(self) -> int:
        return self.app[OPEN_STREAMS].open


async def _serve(cluster: Cluster, settings: GatewaySettings) -> AsyncIterator[Gateway]:
    bus = await Bus.connect(cluster.settings, name="gateway")
    app = make_app(bus, settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        yield Gateway(f"http://127.0.0.1:{port}", http, bus, app)
    await runner.cleanup()
    await bus.close()


@pytest.fixture
async def idle(cluster: Cluster) -> AsyncIterator[Gateway]:
    """A gateway with no services behind it: sessions stay queued, the test publishes their events."""
    settings = GatewaySettings(sse_keepalive_s=0.3, session_timeout_s=5.0, max_streams=4)
    async for g in _serve(cluster, settings):
        yield g


async def _sse(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """(events, keep-alive comments) of a whole stream."""
    events: list[dict[str, Any]] = []
    comments = 0
    async with http.get(url, headers=headers or {}) as resp:
        assert resp.status == 200, await resp.text()
        current: dict[str, Any] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if current:
                    events.append(current)
                current = {}
            elif line.startswith(":"):
                comments += 1
            else:
                key, _, value = line.partition(": ")
                current[key] = json.loads(value) if key == "data" else value
    return events, comments


async def _chat_chunks(resp: aiohttp.ClientResponse) -> tuple[list[dict[str, Any]], int, bool]:
    """(data chunks, keep-alive comments, whether [DONE] came) of a streaming chat completion."""
    chunks: list[dict[str, Any]] = []
    comments, done = 0, False
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith(":"):
            comments += 1
        elif line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            chunks.append(json.loads(line[6:]))
    return chunks, comments, done


def committed(sid: str, index: int, text: str) -> StepCommitted:
    return StepCommitted(session_id=sid, index=index, role="srm", text=text, tokens=1)


def finished(sid: str, answer: str = "7") -> SessionFinished:
    return SessionFinished(
        session_id=sid, answer=answer, reason="final_answer", steps=2, stats=SessionStats()
    )


async def _publish_with_duplicates(bus: Bus, sid: str) -> None:
    """Events as a redelivery outside the duplicate window leaves them: a step and the end twice."""
    await bus.publish(committed(sid, 0, "first"), msg_id=f"{sid}.c0")
    await bus.publish(committed(sid, 0, "first again"), msg_id=f"{sid}.c0-late")
    await bus.publish(committed(sid, 1, "second"), msg_id=f"{sid}.c1")
    await bus.publish(finished(sid), msg_id=f"{sid}.f")
    await bus.publish(committed(sid, 2, "after the end"), msg_id=f"{sid}.c2")
    await bus.publish(finished(sid, "8"), msg_id=f"{sid}.f-late")


async def _create(g: Gateway, key: str, question: str = "What is 3 + 4?", **kw: Any) -> str:
    async with g.http.post(
        f"{g.url}/v1/sessions", json={"question": question, **kw}, headers={"Idempotency-Key": key}
    ) as resp:
        assert resp.status == 202, await resp.text()
        sid: str = (await resp.json())["session_id"]
    return sid


# --- 1. streams outlive slow steps ------------------------------------------------------------------


async def test_sse_stays_open_through_a_step_longer_than_the_keepalive(cluster: Cluster) -> None:
    await start_all(
        cluster,
        SlowBackend("srm", 1.2, steps=[step("We add 3 and 4.")], default=FINAL),
        SlowBackend("lrm", 1.2, default=FINAL),
    )
    async for g in _serve(cluster, GatewaySettings(sse_keepalive_s=0.3)):
        body = {"question": "What is 3 + 4?", "params": {"priming_steps": 0, "rho": 1.0}}
        async with g.http.post(f"{g.url}/v1/sessions", json=body) as resp:
            sid = (await resp.json())["session_id"]
        events, comments = await _sse(g.http, f"{g.url}/v1/sessions/{sid}/events")
        kinds = [e["event"] for e in events if e["event"] in ("requested", "committed", "finished")]
        assert kinds == ["requested", "committed", "committed", "finished"]
        assert events[-1]["event"] == "finished"
        assert comments >= 4, "keep-alives while each step takes 1.2 s"
        assert g.open_streams == 0


async def test_eval_via_the_gateway_survives_long_steps(cluster: Cluster) -> None:
    await start_all(
        cluster,
        SlowBackend("srm", 1.2, steps=[step("We add 3 and 4.")], default=FINAL),
        SlowBackend("lrm", 1.2, default=FINAL),
    )
    async for g in _serve(cluster, GatewaySettings(sse_keepalive_s=0.3)):
        executor = GatewayExecutor(g.url, timeout_s=30)
        try:
            outcome = await executor.solve("What is 3 + 4?", SessionParams(priming_steps=0, rho=1.0), "x")
        finally:
            await executor.aclose()
        assert (outcome.answer, outcome.failed) == ("7", False)
        assert [s.index for s in outcome.steps] == [0, 1]


# --- 2. each step index once, the first end only ----------------------------------------------------


async def test_sse_passes_each_step_index_once_and_only_the_first_end(idle: Gateway) -> None:
    sid = await _create(idle, "dup-sse")
    await _publish_with_duplicates(idle.bus, sid)
    url = f"{idle.url}/v1/sessions/{sid}/events"
    events, _ = await _sse(idle.http, url)
    assert [(e["event"], e["data"].get("index")) for e in events] == [
        ("requested", None),
        ("committed", 0),
        ("committed", 1),
        ("finished", None),
    ]
    assert events[-1]["data"]["answer"] == "7"
    # Resumed after step 0: the late copy of step 0 (a later sequence) is not sent again.
    resumed, _ = await _sse(idle.http, url, {"Last-Event-ID": events[1]["id"]})
    assert resumed == events[2:]
    # Resumed after the end: nothing more.
    after_end, _ = await _sse(idle.http, url, {"Last-Event-ID": events[-1]["id"]})
    assert after_end == []


async def test_chat_passes_each_step_index_once(idle: Gateway) -> None:
    sid = await _create(idle, "dup-chat")
    await _publish_with_duplicates(idle.bus, sid)
    body = {"messages": [{"role": "user", "content": "What is 3 + 4?"}]}
    headers = {"Idempotency-Key": "dup-chat"}  # the same session: the same question and parameters
    async with idle.http.post(f"{idle.url}/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        out = await resp.json()
    assert out["trigreason"]["session_id"] == sid
    assert out["choices"][0]["message"]["reasoning_content"] == "first\n\nsecond"
    assert out["choices"][0]["message"]["content"] == "second"  # no step holds a box: the last one
    assert out["trigreason"]["answer"] == "7"
    async with idle.http.post(
        f"{idle.url}/v1/chat/completions", json={**body, "stream": True}, headers=headers
    ) as resp:
        chunks, _, done = await _chat_chunks(resp)
    assert done
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert [d["reasoning_content"] for d in deltas if "reasoning_content" in d] == ["first\n\n", "second\n\n"]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert deltas[-1]["content"] == "second"


async def test_the_session_view_is_a_projection_of_its_events(idle: Gateway) -> None:
    """GET /v1/sessions/{id} reads the events up to the last one now (no terminal event needed): queued,
    running with what the committed steps tell, then the first end's answer and statistics."""
    sid = await _create(idle, "view")

    async def view() -> dict[str, Any]:
        async with idle.http.get(f"{idle.url}/v1/sessions/{sid}") as resp:
            assert resp.status == 200, await resp.text()
            data: dict[str, Any] = await resp.json()
            return data

    queued = await view()
    assert (queued["status"], queued["question"], queued["steps"]) == ("queued", "What is 3 + 4?", [])
    # The view's params are flat (v1's shape) and go back in as a request's params unchanged.
    policies = PolicyRegistry.builtin()
    assert policies.session_params(queued["params"]) == policies.session_params({})
    await idle.bus.publish(committed(sid, 0, "first"), msg_id=f"{sid}.c0")
    await idle.bus.publish(committed(sid, 0, "first again"), msg_id=f"{sid}.c0-late")
    await idle.bus.publish(
        StepCommitted(session_id=sid, index=1, role="lrm", text="second", tokens=3, trigger="priming"),
        msg_id=f"{sid}.c1",
    )
    running = await view()
    assert running["status"] == "running"
    assert [(s["index"], s["role"], s["text"], s["tokens"]) for s in running["steps"]] == [
        (0, "srm", "first", 1),
        (1, "lrm", "second", 3),
    ]
    stats = running["stats"]
    assert (stats["srm_tokens"], stats["lrm_tokens"], stats["srm_token_ratio"]) == (1, 3, 0.25)
    assert (running["answer"], running["end_reason"]) == (None, None)
    end = SessionFinished(
        session_id=sid,
        answer="7",
        reason="final_answer",
        steps=2,
        stats=SessionStats(srm_tokens=1, wall_s=2.5),
    )
    await idle.bus.publish(end, msg_id=f"{sid}.f")
    await idle.bus.publish(finished(sid, "8"), msg_id=f"{sid}.f-late")
    done = await view()
    assert (done["status"], done["answer"], done["end_reason"]) == ("finished", "7", "final_answer")
    assert done["stats"] == msgspec.to_builtins(end.stats)
    assert len(done["steps"]) == 2


async def test_eval_client_passes_each_step_index_once(idle: Gateway) -> None:
    sub = await idle.bus.nc.subscribe(event_filter("requested"))  # learn the session the executor makes

    async def feed() -> None:
        msg = await sub.next_msg(timeout=10)
        await _publish_with_duplicates(idle.bus, msg.subject.split(".")[2])

    task = asyncio.create_task(feed())
    executor = GatewayExecutor(idle.url, timeout_s=30)
    try:
        outcome = await executor.solve("What is 3 + 4?", SessionParams(), "x")
    finally:
        await executor.aclose()
        await task
        await sub.unsubscribe()
    assert outcome.answer == "7"
    assert [(s.index, s.text) for s in outcome.steps] == [(0, "first"), (1, "second")]


# --- 3. JSON errors, never a text/plain 500 ---------------------------------------------------------


async def _error(resp: aiohttp.ClientResponse, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    err: dict[str, Any] = (await resp.json())["error"]
    assert err["message"]
    if code is not None:
        assert err["code"] == code
    return err


@pytest.mark.parametrize(
    "path",
    ["/v1/sessions/%C3%9B", "/v1/sessions/%C3%9B/events", "/v1/sessions/" + "a" * 65, "/v1/sessions/a.b"],
)
async def test_a_bad_session_id_is_a_400(idle: Gateway, path: str) -> None:
    async with idle.http.get(idle.url + path) as resp:
        await _error(resp, 400, "bad_session_id")


async def test_a_non_ascii_bearer_token_is_a_401(cluster: Cluster) -> None:
    async for g in _serve(cluster, GatewaySettings(api_tokens=("s3cret",))):
        host, port = g.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET /v1/sessions/abc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s\xc3\xa9cret\r\n"
            b"Connection: close\r\n\r\n"
        )
        raw = await reader.read()
        writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401"), head
        assert b"application/json" in head
        assert json.loads(payload)["error"]["code"] == "unauthorized"
        async with g.http.get(f"{g.url}/v1/sessions/abc", headers={"Authorization": "Bearer s3cret"}) as resp:
            await _error(resp, 404, "not_found")


@pytest.mark.parametrize(
    ("ext", "code"),
    [
        ({"params": "ab"}, "invalid_request"),
        ({"colour": "red"}, "invalid_request"),
        ({"policy": "magic"}, "invalid_request"),
        ({"params": {"rh0": 0.1}}, "invalid_params"),
        ({"params": {"rho": 2}}, "invalid_params"),
    ],
)
async def test_bad_chat_extensions_are_a_422(idle: Gateway, ext: dict[str, Any], code: str) -> None:
    body = {"messages": [{"role": "user", "content": "q"}], "trigreason": ext}
    async with idle.http.post(f"{idle.url}/v1/chat/completions", json=body) as resp:
        await _error(resp, 422, code)


async def test_nats_errors_are_a_503(idle: Gateway) -> None:
    await idle.bus.nc.close()
    async with idle.http.get(f"{idle.url}/v1/sessions/abc") as resp:
        await _error(resp, 503, "unavailable")
    async with idle.http.post(f"{idle.url}/v1/sessions", json={"question": "q"}) as resp:
        await _error(resp, 503, "unavailable")
    async with idle.http.get(f"{idle.url}/v1/sessions/abc/events") as resp:
        await _error(resp, 503, "unavailable")


async def test_any_unexpected_exception_is_a_json_500(idle: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(idle.bus.js, "get_last_msg", broken)
    async with idle.http.get(f"{idle.url}/v1/sessions/abc") as resp:
        await _error(resp, 500, "internal")


async def test_the_chat_timeout_is_a_504_or_an_error_chunk(cluster: Cluster) -> None:
    async for g in _serve(cluster, GatewaySettings(session_timeout_s=0.5, sse_keepalive_s=0.2)):
        body = {"messages": [{"role": "user", "content": "q"}]}
        async with g.http.post(f"{g.url}/v1/chat/completions", json=body) as resp:
            await _error(resp, 504, "timeout")
        async with g.http.post(f"{g.url}/v1/chat/completions", json={**body, "stream": True}) as resp:
            assert resp.status == 200
            chunks, comments, done = await _chat_chunks(resp)
        assert comments >= 1, "keep-alives while nothing happens"
        assert chunks[-1] == {"error": {"code": "timeout", "message": chunks[-1]["error"]["message"]}}
        assert done
        assert g.open_streams == 0


async def test_a_failed_session_in_a_chat_stream_is_an_error_chunk(idle: Gateway) -> None:
    sid = await _create(idle, "fails")
    await idle.bus.publish(committed(sid, 0, "first"), msg_id=f"{sid}.c0")
    await idle.bus.publish(SessionFailed(session_id=sid, code="backend", message="down"), msg_id=f"{sid}.x")
    body = {"messages": [{"role": "user", "content": "What is 3 + 4?"}], "stream": True}
    async with idle.http.post(
        f"{idle.url}/v1/chat/completions", json=body, headers={"Idempotency-Key": "fails"}
    ) as resp:
        chunks, _, done = await _chat_chunks(resp)
    assert done
    assert chunks[-1]["error"]["code"] == "backend"
    assert all(c["choices"][0]["finish_reason"] in (None, "stop", "length") for c in chunks[:-1])
    async with idle.http.post(
        f"{idle.url}/v1/chat/completions",
        json={**body, "stream": False},
        headers={"Idempotency-Key": "fails"},
    ) as resp:
        await _error(resp, 502, "session_failed")


async def test_405_has_allow_and_a_json_body(idle: Gateway) -> None:
    for method, path, allow in [
        ("DELETE", "/v1/sessions", "GET,POST"),  # GET: the session browser's list
        ("PUT", "/v1/sessions/abc", "GET"),
        ("POST", "/healthz", "GET"),
        ("GET", "/v1/chat/completions", "POST"),
    ]:
        async with idle.http.request(method, idle.url + path) as resp:
            await _error(resp, 405, "method_not_allowed")
            assert resp.headers["Allow"] == allow


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "99999999999999999999", "+3"])
async def test_a_bad_last_event_id_is_a_400(idle: Gateway, value: str) -> None:
    sid = await _create(idle, "lei")
    async with idle.http.get(
        f"{idle.url}/v1/sessions/{sid}/events", headers={"Last-Event-ID": value}
    ) as resp:
        await _error(resp, 400, "bad_last_event_id")
    async with idle.http.get(f"{idle.url}/v1/sessions/{sid}/events", params={"last_event_id": value}) as resp:
        await _error(resp, 400, "bad_last_event_id")


# --- 4. validation ----------------------------------------------------------------------------------


async def test_chat_applies_the_question_length_limit(idle: Gateway) -> None:
    body = {"messages": [{"role": "user", "content": "x" * 150_000}]}
    async with idle.http.post(
        f"{idle.url}/v1/chat/completions", json=body, headers={"Idempotency-Key": "long"}
    ) as resp:
        error = await _error(resp, 422, "context_too_long")
    assert "at most 20000" in error["message"]
    async with idle.http.get(f"{idle.url}/v1/sessions/{idempotent_session_id('', 'long')}") as resp:
        await _error(resp, 404, "not_found")  # nothing was published
    # A conversation beyond the context limit, on either route, says so.
    turns = [{"role": "system", "content": "y" * 19_000}] * 4 + [{"role": "user", "content": "q?"}]
    for route in ("/v1/chat/completions", "/v1/sessions"):
        async with idle.http.post(f"{idle.url}{route}", json={"messages": turns}) as resp:
            error = await _error(resp, 422, "context_too_long")
        assert "the conversation is" in error["message"]


async def test_a_session_takes_a_conversation_in_place_of_the_question(idle: Gateway) -> None:
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": [{"type": "text", "text": "And 3 + 4?"}]},
    ]
    async with idle.http.post(f"{idle.url}/v1/sessions", json={"messages": turns, "stop": "Q:"}) as resp:
        assert resp.status == 202, await resp.text()
        sid = (await resp.json())["session_id"]
    async with idle.http.get(f"{idle.url}/v1/sessions/{sid}") as resp:
        view = await resp.json()
    assert view["question"] == "And 3 + 4?"
    assert view["conversation"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And 3 + 4?"},
    ]
    assert view["steps"] == []
    for body in ({"question": "q", "messages": turns}, {"policy": "trigreason"}):
        async with idle.http.post(f"{idle.url}/v1/sessions", json=body) as resp:
            await _error(resp, 422, "invalid_request")


async def test_a_misspelled_parameter_is_a_422_that_names_it(idle: Gateway) -> None:
    async with idle.http.post(
        f"{idle.url}/v1/sessions", json={"question": "q", "params": {"rh0": 0.1}}
    ) as resp:
        err = await _error(resp, 422, "invalid_params")
    assert "'rh0'" in err["message"]
    assert "'rho'" in err["message"]  # the suggestion


# --- 5. bounded streams -----------------------------------------------------------------------------


async def test_streams_beyond_the_cap_get_a_429_with_retry_after(cluster: Cluster) -> None:
    async for g in _serve(cluster, GatewaySettings(max_streams=1, sse_keepalive_s=0.2)):
        sid = await _create(g, "cap")
        async with g.http.get(f"{g.url}/v1/sessions/{sid}/events") as first:
            assert first.status == 200
            await first.content.readline()  # the stream is open
            assert g.open_streams == 1
            async with g.http.get(f"{g.url}/v1/sessions/{sid}/events") as resp:
                await _error(resp, 429, "too_many_streams")
                assert int(resp.headers["Retry-After"]) > 0
            body = {"messages": [{"role": "user", "content": "q"}], "stream": True}
            async with g.http.post(f"{g.url}/v1/chat/completions", json=body) as resp:
                await _error(resp, 429, "too_many_streams")
        await _released(g)
        async with g.http.get(f"{g.url}/metrics") as resp:
            assert 'trigreason_gateway_open_streams{site="default"} 0.0' in await resp.text()


async def _released(g: Gateway) -> None:
    for _ in range(100):
        if not g.open_streams:
            break
        await asyncio.sleep(0.05)
    assert g.open_streams == 0, "the slot of a client that left is released"


async def test_a_client_that_leaves_releases_its_stream(idle: Gateway) -> None:
    sid = await _create(idle, "leave")
    async with aiohttp.ClientSession() as other:
        resp = await other.get(f"{idle.url}/v1/sessions/{sid}/events")
        await resp.content.readline()
        assert idle.open_streams == 1
        resp.close()  # the connection goes
    await _released(idle)
    async with aiohttp.ClientSession() as other:
        body = {"messages": [{"role": "user", "content": "q"}], "stream": True}
        resp = await other.post(f"{idle.url}/v1/chat/completions", json=body)
        await resp.content.readline()
        assert idle.open_streams == 1
        resp.close()
    await _released(idle)
    async with aiohttp.ClientSession() as other:  # a blocking completion too
        task = asyncio.create_task(
            other.post(
                f"{idle.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}]}
            )
        )
        for _ in range(250):
            if idle.open_streams:
                break
            await asyncio.sleep(0.02)
        assert idle.open_streams == 1
        task.cancel()
    await _released(idle)


# --- 6. idempotency ---------------------------------------------------------------------------------


async def test_an_idempotency_key_gives_the_same_session(idle: Gateway) -> None:
    first = await _create(idle, "k1", params={"rho": 0.5})
    async with idle.http.post(
        f"{idle.url}/v1/sessions",
        json={"question": "What is 3 + 4?", "params": {"rho": 0.5}},
        headers={"Idempotency-Key": "k1"},
    ) as resp:
        assert resp.status == 202
        assert (await resp.json())["session_id"] == first
        assert resp.headers["Idempotent-Replayed"] == "true"
    async with idle.http.post(
        f"{idle.url}/v1/sessions",
        json={"question": "What is 3 + 5?", "params": {"rho": 0.5}},
        headers={"Idempotency-Key": "k1"},
    ) as resp:
        await _error(resp, 409, "idempotency_key_reused")
    async with idle.http.post(
        f"{idle.url}/v1/sessions", json={"question": "What is 3 + 4?"}, headers={"Idempotency-Key": "k1"}
    ) as resp:
        await _error(resp, 409, "idempotency_key_reused")  # other parameters
    assert await _create(idle, "k2", params={"rho": 0.5}) != first
    async with idle.http.post(
        f"{idle.url}/v1/sessions", json={"question": "q"}, headers={"Idempotency-Key": "has space"}
    ) as resp:
        await _error(resp, 400, "bad_idempotency_key")
    # One request event for the session, however often it was asked for.
    info = await idle.bus.js.stream_info(EVENT_STREAM, subjects_filter=event_subject(first, "requested"))
    assert info.state.subjects == {event_subject(first, "requested"): 1}


async def test_idempotency_keys_are_per_token(cluster: Cluster) -> None:
    async for g in _serve(cluster, GatewaySettings(api_tokens=("alice", "bob"))):
        ids = []
        for token in ("alice", "bob", "alice"):
            async with g.http.post(
                f"{g.url}/v1/sessions",
                json={"question": "q"},
                headers={"Idempotency-Key": "same", "Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 202
                ids.append((await resp.json())["session_id"])
        assert ids[0] == ids[2] != ids[1]


# --- 7. expired sessions ----------------------------------------------------------------------------


async def test_a_session_that_is_gone_is_a_clear_404(idle: Gateway) -> None:
    sid = await _create(idle, "gone")
    await idle.bus.js.purge_stream(EVENT_STREAM, subject=event_subject(sid, ">"))
    for path in (f"/v1/sessions/{sid}", f"/v1/sessions/{sid}/events"):
        async with idle.http.get(idle.url + path) as resp:
            err = await _error(resp, 404, "not_found")
        assert "unknown or expired" in err["message"]


# --- 9. settings ------------------------------------------------------------------------------------


def test_settings_from_the_environment() -> None:
    s = GatewaySettings.from_env({"TRIGREASON_SSE_KEEPALIVE_S": "0.5", "TRIGREASON_MAX_STREAMS": "3"})
    assert (s.sse_keepalive_s, s.max_streams) == (0.5, 3)
    assert (GatewaySettings.from_env({}).sse_keepalive_s, GatewaySettings.from_env({}).max_streams) == (
        15.0,
        256,
    )
    with pytest.raises(ConfigError, match="max_streams"):
        GatewaySettings.from_env({"TRIGREASON_MAX_STREAMS": "0"})
    with pytest.raises(ConfigError, match="TRIGREASON_MAX_STREAMS"):
        GatewaySettings.from_env({"TRIGREASON_MAX_STREAMS": "many"})


async def test_body_and_route_errors_are_json(idle: Gateway) -> None:
    async with idle.http.post(
        f"{idle.url}/v1/sessions", data=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "application/json"}
    ) as resp:
        await _error(resp, 413)
    async with idle.http.post(
        f"{idle.url}/v1/sessions", data=b"question=q", headers={"Content-Type": "multipart/form-data"}
    ) as resp:
        await _error(resp, 415, "unsupported_media_type")
    # curl -d sends JSON as application/x-www-form-urlencoded: still accepted, as the README shows
    async with idle.http.post(
        f"{idle.url}/v1/sessions",
        data=b'{"question": "q"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as resp:
        assert resp.status == 202
    async with idle.http.get(f"{idle.url}/v1/nowhere") as resp:
        await _error(resp, 404, "not_found")
    async with idle.http.get(f"{idle.url}/v1/models") as resp:
        assert (await resp.json())["data"][0]["id"] == "trigreason"


async def test_chat_finish_reason_is_stop_or_length_and_content_never_empty(idle: Gateway) -> None:
    sid = await _create(idle, "budget")
    await idle.bus.publish(committed(sid, 0, "3 + 4 = 7"), msg_id=f"{sid}.c0")
    end = SessionFinished(session_id=sid, answer=None, reason="token_budget", steps=1, stats=SessionStats())
    await idle.bus.publish(end, msg_id=f"{sid}.f")
    body = {"messages": [{"role": "user", "content": "What is 3 + 4?"}]}
    async with idle.http.post(
        f"{idle.url}/v1/chat/completions", json=body, headers={"Idempotency-Key": "budget"}
    ) as resp:
        choice = (await resp.json())["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "3 + 4 = 7"


async def test_garbage_on_a_sessions_request_subject_is_no_session(idle: Gateway) -> None:
    await idle.bus.js.publish(event_subject("junk", "requested"), b"\x00not json")
    async with idle.http.get(f"{idle.url}/v1/sessions/junk") as resp:
        await _error(resp, 404, "not_found")


async def test_eval_client_resumes_a_broken_stream_with_last_event_id() -> None:
    """A gateway replica that goes mid-stream: the executor reconnects after the last event it had."""
    sid = "s1"
    c0 = encode(committed(sid, 0, "a"))
    c1 = encode(committed(sid, 1, "b"))
    fin = encode(finished(sid))
    asked: list[str | None] = []

    async def create(_request: web.Request) -> web.Response:
        return web.json_response({"session_id": sid}, status=202)

    async def events(request: web.Request) -> web.StreamResponse:
        asked.append(request.headers.get("Last-Event-ID"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if len(asked) == 1:
            await resp.write(b"id: 5\nevent: committed\ndata: " + c0 + b"\n\n: keep-alive\n\n")
            assert request.transport is not None
            request.transport.close()  # the replica dies
            return resp
        for i, kind, data in [(9, "committed", c0), (10, "committed", c1), (11, "finished", fin)]:
            await resp.write(f"id: {i}\nevent: {kind}\ndata: ".encode() + data + b"\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/sessions", create)
    app.router.add_get("/v1/sessions/{sid}/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    executor = GatewayExecutor(f"http://127.0.0.1:{port}", timeout_s=10)
    try:
        outcome = await executor.solve("q", SessionParams(), "x")
    finally:
        await executor.aclose()
        await runner.cleanup()
    assert asked == [None, "5"]
    assert [(s.index, s.text) for s in outcome.steps] == [(0, "a"), (1, "b")]
    assert outcome.answer == "7"
