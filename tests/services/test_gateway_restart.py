"""The gateway's event readers survive a nats-server restart (found by ``bench/chaos.py --only
nats-restart``): the server (file store) is killed and restarted mid-session, and an SSE stream and a
streaming chat completion resume where they were, pass every remaining event on once, and end with the
terminal event instead of hanging open. Real nats-server, services in-process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import nats
import pytest
from aiohttp import web

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all
from tests.support import step
from trigreason.nats_server import LocalNatsServer
from trigreason.proto import EVENT_STREAM, event_subject
from trigreason.services.gateway import GatewaySettings, make_app
from trigreason.services.runtime import Bus, BusSettings
from trigreason.services.worker.backends import Generation, GenerationRequest

pytestmark = pytest.mark.timeout(90)

STEPS = 8  # each session ends at max_steps, ~STEPS * DELAY_S after it starts
DELAY_S = 0.4
TERMINAL_WITHIN_S = 30.0  # after the server is back
# From the terminal event's store to its client (nats-py by itself notices a lost ordered consumer by two
# missed idle heartbeats, 10 s, and did not always recover even then).
LAG_S = 5.0


class SlowBackend(ScriptedBackend):
    def __init__(self, name: str, delay_s: float, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.delay_s = delay_s

    async def generate(self, request: GenerationRequest) -> Generation:
        await asyncio.sleep(self.delay_s)
        return await super().generate(request)


@pytest.fixture
async def file_cluster() -> AsyncIterator[Cluster]:
    async with LocalNatsServer() as server:
        c = Cluster(
            server,
            BusSettings(nats_url=server.url, ack_wait_s=2.0, backoff_s=(0.1,), storage="file"),
        )
        try:
            yield c
        finally:
            await c.close()


async def _serve(cluster: Cluster) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    bus = await Bus.connect(cluster.settings, name="gateway")
    app = make_app(bus, GatewaySettings(sse_keepalive_s=0.3, session_timeout_s=60.0))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            yield f"http://127.0.0.1:{port}", http
    finally:
        await runner.cleanup()
        await bus.close()


async def _sse(
    http: aiohttp.ClientSession, url: str, progress: asyncio.Queue[str]
) -> tuple[list[dict[str, Any]], float]:
    """(every event of a whole SSE stream, when it ended: wall clock); each event's kind also goes to
    ``progress``."""
    events: list[dict[str, Any]] = []
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        current: dict[str, Any] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if current:
                    events.append(current)
                    progress.put_nowait(current["event"])
                current = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                current[key] = json.loads(value) if key == "data" else value
    return events, time.time()


async def _chat(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[list[dict[str, Any]], bool, float]:
    """(data chunks, whether [DONE] came, when it ended: wall clock) of a streaming chat completion."""
    chunks: list[dict[str, Any]] = []
    done = False
    async with http.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunks.append(json.loads(line[6:]))
    return chunks, done, time.time()


async def _stored(url: str, session_id: str) -> tuple[set[int], float]:
    """(the distinct step indexes the session committed, when its first terminal event was stored: wall
    clock), read straight from JetStream."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        subject = event_subject(session_id, ">")
        info = await js.stream_info(EVENT_STREAM, subjects_filter=subject)
        total = sum((info.state.subjects or {}).values())
        sub = await js.subscribe(subject, ordered_consumer=True)
        indexes: set[int] = set()
        ended = []
        for _ in range(total):
            msg = await sub.next_msg(timeout=5)
            kind = msg.subject.rsplit(".", 1)[1]
            if kind == "committed":
                indexes.add(msgspec.json.decode(msg.data)["index"])
            elif kind in ("finished", "failed"):
                ended.append(msg.metadata.timestamp.timestamp())
        await sub.unsubscribe()
        assert ended, f"session {session_id} has no terminal event"
        return indexes, ended[0]
    finally:
        await nc.close()


async def test_sse_and_chat_stream_survive_a_nats_server_restart(file_cluster: Cluster) -> None:
    thinking = step("We keep thinking.")
    await start_all(
        file_cluster,
        SlowBackend("srm", DELAY_S, default=thinking),
        SlowBackend("lrm", DELAY_S, default=thinking),
    )
    params = {"priming_steps": 0, "rho": 1.0, "max_steps": STEPS}
    async for url, http in _serve(file_cluster):
        body = {"question": "What is 3 + 4?", "params": params}
        async with http.post(f"{url}/v1/sessions", json=body) as r:
            assert r.status == 202, await r.text()
            sid = (await r.json())["session_id"]
        progress: asyncio.Queue[str] = asyncio.Queue()
        sse = asyncio.create_task(_sse(http, f"{url}/v1/sessions/{sid}/events", progress))
        chat_body = {
            "model": "trigreason",
            "stream": True,
            "messages": [{"role": "user", "content": "What is 2 + 5?"}],
            "trigreason": {"params": params},
        }
        chat = asyncio.create_task(_chat(http, f"{url}/v1/chat/completions", chat_body))

        # Mid-session: once two steps have reached the SSE client, the server dies and comes back.
        committed = 0
        async with asyncio.timeout(20):
            while committed < 2:
                if await progress.get() == "committed":
                    committed += 1
        file_cluster.server.kill()
        await asyncio.sleep(1.0)
        await file_cluster.server.restart()

        done, _ = await asyncio.wait({sse, chat}, timeout=TERMINAL_WITHIN_S)
        assert sse in done, "the SSE stream is still open without its terminal event"
        assert chat in done, "the chat completion stream is still open without [DONE]"
        events, sse_ended = sse.result()
        chunks, chat_done, chat_ended = chat.result()

        # SSE: every event id once, in order, each step index once, the terminal event last.
        ids = [int(e["id"]) for e in events]
        assert len(ids) == len(set(ids)), f"an event id came twice: {ids}"
        assert ids == sorted(ids)
        kinds = [e["event"] for e in events]
        assert kinds[0] == "requested"
        assert kinds.count("requested") == 1
        assert kinds[-1] == "finished", kinds
        assert kinds.count("finished") + kinds.count("failed") == 1
        indexes = [e["data"]["index"] for e in events if e["event"] == "committed"]
        assert indexes == list(range(len(indexes)))
        stored, ended_at = await _stored(file_cluster.server.url, sid)
        assert set(indexes) == stored
        assert len(indexes) == STEPS
        assert sse_ended - ended_at < LAG_S, f"the terminal event came {sse_ended - ended_at:.1f} s late"

        # The chat stream: no error chunk, each step once, a final answer chunk, then [DONE].
        assert chat_done
        assert not [c for c in chunks if "error" in c], chunks
        reasoning = [c for c in chunks if c["choices"][0]["delta"].get("reasoning_content")]
        assert len(reasoning) == STEPS
        assert chunks[-1]["choices"][0]["finish_reason"] is not None
        _, chat_ended_at = await _stored(file_cluster.server.url, chunks[0]["id"].removeprefix("chatcmpl-"))
        assert chat_ended - chat_ended_at < LAG_S, f"[DONE] came {chat_ended - chat_ended_at:.1f} s late"
