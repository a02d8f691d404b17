"""End to end through the gateway with a real model on the real CPU inference server (tiny SmolLM2 as
both SRM and LRM: the point is the whole path, not the answer's quality)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web

from tests.services.cluster import Cluster, start_all
from trigreason.nats_server import LocalNatsServer
from trigreason.proto import SessionFinished, Verdict, decode_message, session_events
from trigreason.services.gateway import GatewaySettings, make_app
from trigreason.services.runtime import Bus, BusSettings
from trigreason.services.tgi_cpu import LlamaEngine, TgiCpuSettings, start_server
from trigreason.services.tgi_cpu import make_app as make_tgi_app
from trigreason.services.tgi_cpu.models import resolve_model
from trigreason.services.worker.backends import make_backend

# Generous limits: a loaded 2-core machine decodes a few tokens per second.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def tiny() -> Path:
    return resolve_model("tiny", progress=False)


@pytest.fixture
async def tgi_url(tiny: Path) -> AsyncIterator[str]:
    engine = LlamaEngine(tiny, n_ctx=2048, n_threads=2, model_id="tiny")
    runner, url = await start_server(
        make_tgi_app(engine, TgiCpuSettings(ctx=2048, threads=2, port=0)), host="127.0.0.1", port=0
    )
    yield url
    await runner.cleanup()
    engine.close()


async def test_session_through_the_gateway_on_a_real_model(tgi_url: str) -> None:
    async with LocalNatsServer() as server:
        cluster = Cluster(server, BusSettings(nats_url=server.url, storage="memory"))
        srm, lrm = await make_backend(tgi_url), await make_backend(tgi_url)
        await start_all(cluster, srm, lrm)
        bus = await Bus.connect(cluster.settings, name="gateway")
        runner = web.AppRunner(make_app(bus, GatewaySettings()))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        try:
            body = {
                "question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
                "params": {
                    "priming_steps": 1,
                    "rho": 0.9,
                    "max_tokens": 160,
                    "step_max_tokens": 40,
                    "temperature": 0,
                },
            }
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/v1/sessions", json=body) as resp:
                    assert resp.status == 202
                    sid = (await resp.json())["session_id"]
                sse: list[dict[str, Any]] = []
                async with http.get(
                    f"{base}/v1/sessions/{sid}/events", timeout=aiohttp.ClientTimeout(total=1100)
                ) as resp:
                    current: dict[str, Any] = {}
                    async for raw in resp.content:
                        line = raw.decode().rstrip("\n")
                        if not line:
                            if current:
                                sse.append(current)
                            current = {}
                        elif not line.startswith(":"):
                            key, _, value = line.partition(": ")
                            current[key] = value
                async with http.get(f"{base}/v1/sessions/{sid}") as resp:
                    view = await resp.json()
        finally:
            await runner.cleanup()
            await bus.close()
            await cluster.close()
            await srm.aclose()
            await lrm.aclose()

        # The session finished, and its statistics add up.
        assert sse[-1]["event"] == "finished"
        end = json.loads(sse[-1]["data"])
        stats = end["stats"]
        steps = view["steps"]
        assert view["status"] == "finished"
        assert steps
        assert (steps[0]["role"], steps[0]["trigger"]) == ("lrm", "priming")
        assert stats["srm_tokens"] == sum(s["tokens"] for s in steps if s["role"] == "srm")
        assert stats["lrm_tokens"] == sum(s["tokens"] for s in steps if s["role"] == "lrm")
        total = stats["srm_tokens"] + stats["lrm_tokens"]
        assert 0 < total <= 160
        assert stats["srm_token_ratio"] == pytest.approx(stats["srm_tokens"] / total)
        assert stats["lrm_calls"] >= stats["lrm_steps"] >= 1
        assert stats["srm_backend_s"] + stats["lrm_backend_s"] > 0

        # The SSE replay equals the session's event history in JetStream, event for event.
        nc = await nats.connect(server.url)
        try:
            sub = await nc.jetstream().subscribe(session_events(sid), ordered_consumer=True)
            history = []
            async for msg in sub.messages:
                history.append(
                    (str(msg.metadata.sequence.stream), msg.subject.rsplit(".", 1)[1], msg.data.decode())
                )
                if msg.subject.endswith((".finished", ".failed")):
                    break
        finally:
            await nc.close()
        assert [(e["id"], e["event"], e["data"]) for e in sse] == history
        assert all(decode_message(d) for _i, _k, d in history)


async def test_likelihood_session_through_the_gateway_on_a_real_model(tgi_url: str) -> None:
    """The likelihood policy's scoring calls on the real CPU server (decoder_input_details): each SRM
    step gets the model's log-probabilities and a verdict against the threshold."""
    async with LocalNatsServer() as server:
        cluster = Cluster(server, BusSettings(nats_url=server.url, storage="memory"))
        srm, lrm = await make_backend(tgi_url), await make_backend(tgi_url)
        await start_all(cluster, srm, lrm)
        bus = await Bus.connect(cluster.settings, name="gateway")
        runner = web.AppRunner(make_app(bus, GatewaySettings()))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        body = {
            "question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
            "params": {
                "policy": "likelihood",
                "priming_steps": 1,
                "threshold": -1.5,
                "max_tokens": 120,
                "step_max_tokens": 30,
                "temperature": 0,
            },
        }
        nc = await nats.connect(server.url)
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"http://127.0.0.1:{port}/v1/sessions", json=body) as resp,
            ):
                assert resp.status == 202, await resp.text()
                sid = (await resp.json())["session_id"]
            sub = await nc.jetstream().subscribe(session_events(sid), ordered_consumer=True)
            events = []
            async for msg in sub.messages:
                events.append(decode_message(msg.data))
                if msg.subject.endswith((".finished", ".failed")):
                    break
        finally:
            await nc.close()
            await runner.cleanup()
            await bus.close()
            await cluster.close()
            await srm.aclose()
            await lrm.aclose()
    end = events[-1]
    assert isinstance(end, SessionFinished), end
    verdicts = [e for e in events if isinstance(e, Verdict)]
    assert verdicts, "no SRM step was judged"
    for v in verdicts:
        assert v.score_stat is not None
        assert v.scored_tokens > 0
        assert (v.decision == "replace") == (v.score_stat < -1.5)
    assert end.stats.score_calls == len(verdicts)
    assert end.stats.score_prompt_tokens > 0
