"""The replica pool against real HTTP servers (the TGI-protocol simulator, and small apps that fail on
purpose): a session stays on one replica, a dead replica's steps go on to the next and come back when it
returns, 429s and DNS changes are followed, and the counts reach Prometheus."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from trigreason.proto import BackendError, ConfigError
from trigreason.services.backend_sim import SimSettings, make_app, start_server
from trigreason.services.worker import backend_from_env
from trigreason.services.worker.backends import (
    GenerationRequest,
    ReplicaPool,
    TgiBackend,
    make_backend,
    parse_backend_url,
    rendezvous_order,
)

from .support import fast_retries, serve_app, serve_sim

pytestmark = pytest.mark.asyncio

_FAST = {"probe_interval_s": 0.1, "eject_s": 0.2}


def _request(session: str, step: int = 0) -> GenerationRequest:
    return GenerationRequest(
        prompt=f"Question {session}. Step {step}.", max_new_tokens=8, affinity_key=session
    )


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def _sim_at(host: str, port: int) -> AsyncIterator[web.AppRunner]:
    runner, _ = await start_server(
        make_app(SimSettings(time_per_token_ms=0.2, prefill_ms=0.0, port=port)), host=host, port=port
    )
    try:
        yield runner
    finally:
        await runner.cleanup()


async def _pool(spec: str, **settings: Any) -> ReplicaPool:
    backend = await make_backend(spec, settings=fast_retries(**{**_FAST, **settings}), name="srm")
    assert isinstance(backend, ReplicaPool)
    return backend


async def test_one_url_is_one_adapter_as_before() -> None:
    async with serve_sim() as url:
        backend = await make_backend(url)
        try:
            assert isinstance(backend, TgiBackend)
            gen = await backend.generate(_request("s"))  # the affinity key is ignored by one server
            assert gen.step.tokens > 0
        finally:
            await backend.aclose()


async def test_each_session_stays_on_its_replica() -> None:
    async with serve_sim() as a, serve_sim() as b, serve_sim() as c:
        pool = await _pool(f"{a},{b},{c}")
        try:
            assert pool.protocol == "tgi"
            sessions = [f"session-{i}" for i in range(12)]
            for step in range(4):
                for s in sessions:  # one at a time: bounded load never has a say
                    await pool.generate(_request(s, step))
            stats = pool.stats()
            assert stats.affinity_hits == 48
            assert stats.affinity_misses == 0
            expected = dict.fromkeys((a, b, c), 0)
            for s in sessions:
                expected[rendezvous_order(s, [a, b, c])[0]] += 4
            assert {url: r.steps for url, r in stats.replicas.items()} == expected
            assert all(r.prompt_tokens > 0 for r in stats.replicas.values() if r.steps)
            # All at once: a replica with more than its share in flight passes steps on (bounded load),
            # and that is the only reason a step leaves its replica.
            await asyncio.gather(*(pool.generate(_request(s, 4)) for s in sessions))
            stats = pool.stats()
            assert stats.affinity_hits + stats.affinity_misses == 60
            assert set(stats.reroutes) <= {"saturated"}
            assert stats.affinity_misses == stats.reroutes.get("saturated", 0)
        finally:
            await pool.aclose()


async def test_round_robin_spreads_a_session_over_replicas() -> None:
    async with serve_sim() as a, serve_sim() as b:
        pool = await _pool(f"{a},{b}", routing="round-robin")
        try:
            for step in range(6):
                await pool.generate(_request("one-session", step))
            stats = pool.stats()
            assert [r.steps for r in stats.replicas.values()] == [3, 3]
            assert stats.affinity_misses == 3  # the hit ratio says what round-robin costs
        finally:
            await pool.aclose()


async def test_a_killed_replica_is_ejected_its_sessions_move_on_and_come_back() -> None:
    port_a, port_b = _free_port(), _free_port()
    a, b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    on_a = next(f"s{i}" for i in range(100) if rendezvous_order(f"s{i}", [a, b])[0] == a)
    async with _sim_at("127.0.0.1", port_b):
        runner_a = (await start_server(make_app(SimSettings(time_per_token_ms=0.2, prefill_ms=0.0)),
                                       host="127.0.0.1", port=port_a))[0]  # fmt: skip
        pool = await _pool(f"{a},{b}")
        try:
            await pool.generate(_request(on_a, 0))
            await runner_a.cleanup()  # replica a dies
            for step in range(1, 4):  # every step still answered, by b
                await pool.generate(_request(on_a, step))
            stats = pool.stats()
            assert stats.replicas[b].steps == 3
            assert stats.replicas[a].failures >= 1
            assert stats.reroutes.get("failed", 0) + stats.reroutes.get("ejected", 0) == 3
            await _wait_until(lambda: not pool.stats().replicas[a].up)  # the probe ejected it
            assert pool.stats().replicas[a].ejections >= 1
            async with _sim_at("127.0.0.1", port_a):  # a is back
                await _wait_until(lambda: pool.stats().replicas[a].up)  # readmitted by a probe
                await pool.generate(_request(on_a, 4))
                assert pool.stats().replicas[a].steps == 2  # the session moved back
        finally:
            await pool.aclose()


async def test_every_replica_down_fails_retryably_after_trying_each() -> None:
    dead = [f"http://127.0.0.1:{_free_port()}" for _ in range(2)]
    async with serve_sim() as live:
        pool = await _pool(",".join([live, *dead]), max_attempts=1)
    # Started while one answered; now none does.
    await asyncio.sleep(0)
    with pytest.raises(BackendError) as caught:
        await pool.generate(_request("s"))
    await pool.aclose()
    assert caught.value.retryable
    assert "no replica could serve the step (3 attempts)" in caught.value.message


async def test_no_replica_reachable_at_start_is_a_retryable_error() -> None:
    dead = ",".join(f"http://127.0.0.1:{_free_port()}" for _ in range(2))
    with pytest.raises(BackendError) as caught:
        await make_backend(dead, settings=fast_retries(probe_timeout_s=1.0))
    assert caught.value.retryable


async def test_a_429_sends_the_step_to_the_next_replica_without_ejecting() -> None:
    async def busy(_request: web.Request) -> web.Response:
        return web.json_response({"error": "queue full", "error_type": "overloaded"}, status=429)

    async def info(_request: web.Request) -> web.Response:
        return web.json_response({"model_id": "busy"})

    app = web.Application()
    app.router.add_post("/generate", busy)
    app.router.add_get("/info", info)
    app.router.add_get("/health", info)
    async with serve_app(app) as crowded, serve_sim() as free:
        pool = await _pool(f"{crowded},{free}")
        try:
            on_crowded = next(
                f"s{i}" for i in range(100) if rendezvous_order(f"s{i}", [crowded, free])[0] == crowded
            )
            await pool.generate(_request(on_crowded, 0))
            await pool.generate(_request(on_crowded, 1))
            stats = pool.stats()
            assert stats.replicas[free].steps == 2
            assert stats.reroutes == {"failed": 1, "overloaded": 1}
            assert stats.replicas[crowded].ejections == 0
            assert stats.replicas[crowded].up
        finally:
            await pool.aclose()


async def test_a_rejected_request_is_not_retried_elsewhere() -> None:
    async with serve_sim(max_total_tokens=64) as a, serve_sim(max_total_tokens=64) as b:
        pool = await _pool(f"{a},{b}")
        try:
            with pytest.raises(BackendError) as caught:
                await pool.generate(GenerationRequest(prompt="x", max_new_tokens=10_000, affinity_key="s"))
            assert not caught.value.retryable
            assert sum(r.failures for r in pool.stats().replicas.values()) == 0
        finally:
            await pool.aclose()


async def test_a_dns_name_is_resolved_again_and_followed() -> None:
    # Two replicas on one port, as a headless Service's pods: 127.0.0.1 and 127.0.0.2 (all of 127/8 is
    # loopback on Linux). The resolver stands in for DNS, the servers are real.
    port = _free_port()
    answers = [["127.0.0.1"]]

    async def resolver(host: str, p: int) -> list[str]:
        assert (host, p) == ("tgi-srm-replicas", port)
        return answers[-1]

    async with _sim_at("127.0.0.1", port), _sim_at("127.0.0.2", port):
        source = parse_backend_url(f"dns+http://tgi-srm-replicas:{port}")
        pool = ReplicaPool(
            source, make_adapter=_tgi_adapter, settings=fast_retries(resolve_interval_s=0.1, **_FAST),
            resolver=resolver, name="srm",
        )  # fmt: skip
        await pool.start()
        try:
            assert pool.replicas == [f"http://127.0.0.1:{port}"]
            answers.append(["127.0.0.1", "127.0.0.2"])  # scaled up
            await _wait_until(lambda: len(pool.replicas) == 2)
            for i in range(20):
                await pool.generate(_request(f"s{i}"))
            assert all(r.steps > 0 for r in pool.stats().replicas.values())
            answers.append([])  # a resolution with no answer keeps what is known
            await asyncio.sleep(0.3)
            assert len(pool.replicas) == 2
            answers.append(["127.0.0.2"])  # scaled down
            await _wait_until(lambda: pool.replicas == [f"http://127.0.0.2:{port}"])
            await pool.generate(_request("s0", 1))
        finally:
            await pool.aclose()


async def test_the_counts_reach_prometheus() -> None:
    async with serve_sim() as a, serve_sim() as b:
        pool = await _pool(f"{a},{b}")
        try:
            for i in range(4):
                await pool.generate(_request(f"s{i}"))
            registry = CollectorRegistry()
            registry.register(pool.collector())
            text = generate_latest(registry).decode()
        finally:
            await pool.aclose()
    for name in (
        "trigreason_backend_steps_total",
        "trigreason_backend_prompt_tokens_total",
        "trigreason_backend_cached_prompt_tokens_total",
        'trigreason_backend_affinity_total{pool="srm",result="hit"} 4.0',
        'trigreason_backend_affinity_hit_ratio{pool="srm"} 1.0',
        'trigreason_backend_reroutes_total{pool="srm",reason="failed"} 0.0',
        "trigreason_backend_replica_up",
    ):
        assert name in text, name


def _tgi_adapter(url: str, protocol: str, settings: Any, name: str | None) -> TgiBackend:
    assert protocol == "tgi"
    return TgiBackend(url, settings=settings, name=name)


async def _wait_until(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_the_environment_names_the_replicas_and_the_routing() -> None:
    async with serve_sim() as a, serve_sim() as b:
        env = {
            "TRIGREASON_SRM_URL": f"{a}, {b}",
            "TRIGREASON_BACKEND_ROUTING": "round-robin",
            "TRIGREASON_BACKEND_LOAD_FACTOR": "2",
            "TRIGREASON_BACKEND_EJECT_AFTER": "3",
        }
        backend = await backend_from_env("srm", env)()
        try:
            assert isinstance(backend, ReplicaPool)
            assert backend.replicas == [a, b]
            settings = backend.router.settings
            assert (settings.mode, settings.load_factor, settings.eject_after) == ("round-robin", 2.0, 3)
        finally:
            await backend.aclose()
    with pytest.raises(ConfigError, match="TRIGREASON_BACKEND_ROUTING"):
        backend_from_env("srm", {"TRIGREASON_SRM_URL": "http://a:1", "TRIGREASON_BACKEND_ROUTING": "random"})
