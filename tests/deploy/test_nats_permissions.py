"""The NATS authorization for real: nats-server on infra/nats/nats.conf (the file the compose stack mounts;
the chart's values carry the same block, test_nats_auth_source.py), one user per service.

Each user may publish and subscribe exactly its own subjects, and the five services, each under its own
user, run a session end to end through the gateway with no permission violation in the server's log.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NatsClient
from opentelemetry.sdk.trace import TracerProvider

from tests.deploy.conftest import AuthNats
from tests.scripted import ScriptedBackend
from tests.support import step
from trigreason.host import SERVICES, ServiceSettings, run_service
from trigreason.proto import Role, inbox_prefix
from trigreason.services.worker.backends import Backend

pytestmark = pytest.mark.timeout(90)

# The server's own record of a refusal, e.g.
# [ERR] ... - "$G/user:gateway" - Publish Violation - Subject "trig.evt.s1.verdict"
_VIOLATION = re.compile(r'"\$G/user:([^"]+)" - (Publish|Subscription) Violation - Subject "([^"]+)"')

GW, ORCH, EVAL, SRM, LRM = (str(s) for s in SERVICES)
WORKERS = {SRM, LRM}
EVERYONE = {str(s) for s in SERVICES}

# Who may publish to each subject: written out by hand, independently of tests/deploy/nats_auth.py.
PUBLISH: dict[str, set[str]] = {
    "trig.evt.s1.requested": {GW},
    "trig.evt.s1.committed": {ORCH},
    "trig.evt.s1.finished": {ORCH},
    "trig.evt.s1.failed": {ORCH},
    "trig.evt.s1.verdict": {EVAL},
    "trig.evt.s1.srm_step": {SRM},
    "trig.evt.s1.lrm_step": {LRM},
    "trig.evt.s1.judged": {LRM},
    "trig.evt.s1.step_failed": WORKERS,
    "trig.evt.s1.made_up": set(),
    # a consumer that dead-letters a session's message tells that session
    "trig.evt.s1.dead_lettered": {ORCH, EVAL, SRM, LRM},
    # the session's deadline timer: armed and consumed by the orchestrator only
    "trig.timer.s1": {ORCH},
    "$JS.API.CONSUMER.MSG.NEXT.TRIG_TIMER.orchestrator-timer": {ORCH},
    "$JS.ACK.TRIG_TIMER.orchestrator-timer.1.5.5.0.1": {ORCH},
    "trig.dlq.trig.timer.s1": {ORCH},
    "trig.cmd.srm": {ORCH},
    "trig.cmd.lrm": {ORCH, EVAL},
    # pulling from a durable consumer, and acknowledging its messages
    "$JS.API.CONSUMER.MSG.NEXT.TRIG_CMD.srm-worker": {SRM},
    "$JS.API.CONSUMER.MSG.NEXT.TRIG_CMD.lrm-worker": {LRM},
    "$JS.API.CONSUMER.MSG.NEXT.TRIG_EVT.orchestrator": {ORCH},
    "$JS.API.CONSUMER.MSG.NEXT.TRIG_EVT.trigger-evaluator": {EVAL},
    "$JS.ACK.TRIG_CMD.srm-worker.1.5.5.0.1": {SRM},
    "$JS.ACK.TRIG_CMD.lrm-worker.1.5.5.0.1": {LRM},
    "$JS.ACK.TRIG_EVT.orchestrator.1.5.5.0.1": {ORCH},
    "$JS.ACK.TRIG_EVT.trigger-evaluator.1.5.5.0.1": {EVAL},
    # dead letters of what each consumes
    "trig.dlq.trig.cmd.srm": {SRM},
    "trig.dlq.trig.cmd.lrm": {LRM},
    "trig.dlq.trig.evt.s1.verdict": {ORCH},
    "trig.dlq.trig.evt.s1.srm_step": {EVAL},
    "trig.dlq.trig.evt.s1.committed": set(),
    # session snapshots: the orchestrator's private state, which only it writes and reads (the gateway's
    # session view is a projection of the session's events)
    "$KV.trig_sessions.s1": {ORCH},
    "$JS.API.DIRECT.GET.KV_trig_sessions.$KV.trig_sessions.s1": {ORCH},
    "$JS.API.STREAM.MSG.GET.KV_trig_sessions": {ORCH},
    "$JS.API.STREAM.MSG.GET.TRIG_EVT": {GW, ORCH},
    # SSE replay: ephemeral consumers on the event stream, never on the command stream
    "$JS.API.CONSUMER.CREATE.TRIG_EVT": {GW},
    "$JS.API.STREAM.NAMES": {GW},
    "$JS.API.CONSUMER.CREATE.TRIG_CMD": set(),
    "$JS.API.CONSUMER.CREATE.TRIG_CMD.x.trig.cmd.srm": set(),
    # the layout, created idempotently by everyone at start-up; nothing deletes or purges
    "$JS.API.STREAM.CREATE.TRIG_CMD": EVERYONE,
    "$JS.API.STREAM.UPDATE.TRIG_EVT": EVERYONE,
    "$JS.API.STREAM.CREATE.TRIG_TIMER": EVERYONE,
    "$JS.API.STREAM.UPDATE.KV_trig_sessions": EVERYONE,
    "$JS.API.CONSUMER.DURABLE.CREATE.TRIG_CMD.srm-worker": EVERYONE,
    "$JS.API.CONSUMER.DURABLE.CREATE.TRIG_CMD.someone-else": set(),
    "$JS.API.STREAM.CREATE.OTHER": set(),
    "$JS.API.STREAM.DELETE.TRIG_EVT": set(),
    "$JS.API.STREAM.PURGE.TRIG_CMD": set(),
    "$JS.API.CONSUMER.DELETE.TRIG_CMD.srm-worker": set(),
    "$JS.API.STREAM.MSG.DELETE.TRIG_EVT": set(),
    "other.subject": set(),
}

# Subscriptions: only one's own inbox. No service can read the bus directly, nor another one's replies
# (a pull consumer's messages arrive in the puller's inbox).
SUBSCRIBE: dict[str, set[str]] = {
    **{f"{inbox_prefix(s)}.abc.*": {s} for s in SERVICES},
    "_INBOX.>": set(),
    "_INBOX.*": set(),
    ">": set(),
    "trig.cmd.>": set(),
    "trig.cmd.srm": set(),
    "trig.evt.>": set(),
    "trig.evt.s1.verdict": set(),
    "$KV.trig_sessions.>": set(),
}


async def _connect(server: AuthNats, service: str, errors: list[str]) -> NatsClient:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        server.url,
        user=service,
        password=server.passwords[service],
        inbox_prefix=inbox_prefix(service),
        error_cb=on_error,
        allow_reconnect=False,
    )


async def _probe(
    server: AuthNats, service: str, action: Callable[[NatsClient], Awaitable[None]], kind: str
) -> set[str]:
    """Run ``action`` as ``service``; the subjects the server refused it, from the server's log."""
    errors: list[str] = []
    seen = len(server.log_text())
    nc = await _connect(server, service, errors)
    try:
        await action(nc)
        await nc.flush()
        await asyncio.sleep(0.3)  # violations come back asynchronously
    finally:
        await nc.close()
    refused = [m.groups() for m in _VIOLATION.finditer(server.log_text()[seen:])]
    assert {user for user, _, _ in refused} <= {service}
    assert len(errors) == len(refused)  # and the client was told about each one
    return {subject for _, k, subject in refused if k == kind}


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_publishes_exactly_its_own_subjects(auth_nats: AuthNats, service: str) -> None:
    async def publish_all(nc: NatsClient) -> None:
        for subject in PUBLISH:
            await nc.publish(subject, b"")

    denied = await _probe(auth_nats, service, publish_all, "Publish")
    assert denied == {s for s, who in PUBLISH.items() if service not in who}
    # The cases the issue names, spelled out.
    if service in WORKERS:
        assert "trig.evt.s1.verdict" in denied  # a worker cannot publish verdicts
    if service == GW:
        assert "$JS.API.CONSUMER.MSG.NEXT.TRIG_CMD.srm-worker" in denied  # nor pull commands
        assert "$JS.API.CONSUMER.CREATE.TRIG_CMD" in denied


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_subscribes_only_to_its_own_inbox(auth_nats: AuthNats, service: str) -> None:
    async def subscribe_all(nc: NatsClient) -> None:
        for subject in SUBSCRIBE:
            await nc.subscribe(subject)

    denied = await _probe(auth_nats, service, subscribe_all, "Subscription")
    assert denied == {s for s, who in SUBSCRIBE.items() if service not in who}
    if service == GW:
        assert {"trig.cmd.>", "_INBOX.>", f"{inbox_prefix(SRM)}.abc.*"} <= denied  # no reading commands


async def test_a_wrong_password_is_refused(auth_nats: AuthNats) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(
            auth_nats.url, user=SRM, password="wrong", allow_reconnect=False, max_reconnect_attempts=0
        )


FINAL = step("So \\boxed{7}.")


class _WithInfo(ScriptedBackend):
    """A scripted backend with TGI's ``/info`` limits, which its worker publishes on the bus."""

    async def info(self) -> dict[str, Any]:
        return {
            "max_top_n_tokens": 20,
            "max_input_tokens": 4095,
            "max_total_tokens": 4096,
            "max_stop_sequences": 4,
        }


@pytest.fixture
async def stack(auth_nats: AuthNats) -> AsyncIterator[str]:
    """The five services through the real service host, each with its own NATS user and inbox prefix,
    configured from the environment the way the compose file and the chart configure them."""
    stop = asyncio.Event()
    gateway_url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    backends: dict[Role, Backend] = {
        "srm": _WithInfo("srm", [step("We add 3 and 4."), FINAL], default=FINAL),
        "lrm": _WithInfo("lrm", [step("Prime.")], default=FINAL),
    }

    async def backend_factory(role: Role) -> Backend:
        return backends[role]

    def env(service: str) -> dict[str, str]:
        return {
            "TRIGREASON_NATS_URL": auth_nats.url,
            "TRIGREASON_NATS_USER": service,
            "TRIGREASON_NATS_PASSWORD": auth_nats.passwords[service],
            "TRIGREASON_NATS_INBOX_PREFIX": inbox_prefix(service),
            "TRIGREASON_NATS_STORAGE": "memory",
            "TRIGREASON_PORT": "0",
        }

    def ready(url: str) -> None:
        if url.startswith("http") and not gateway_url.done():
            gateway_url.set_result(url)

    tasks: list[asyncio.Task[None]] = []
    for service in SERVICES:
        settings = ServiceSettings.from_env(env(service), concurrency=4)
        assert settings.bus.nats_user == service
        tasks.append(
            asyncio.create_task(
                run_service(
                    service,
                    settings,
                    stop=stop,
                    tracer_provider=TracerProvider(),
                    backend_factory=backend_factory,
                    on_ready=ready,
                )
            )
        )
        await asyncio.sleep(0.05)
    try:
        waiting: list[asyncio.Future[Any]] = [gateway_url, *tasks]
        done, _ = await asyncio.wait(waiting, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task in done:
                task.result()  # a service that failed to start: raise its error
        yield await asyncio.wait_for(gateway_url, 1)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_services_run_a_session_end_to_end_under_their_own_users(
    auth_nats: AuthNats, stack: str
) -> None:
    body = {"question": "What is 3 + 4?", "policy": "trigreason", "params": {"priming_steps": 1, "rho": 1.0}}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack}/v1/sessions", json=body) as resp:
            assert resp.status == 202
            sid = (await resp.json())["session_id"]
        # Server-Sent Events: the gateway replays the session's history through an ordered consumer.
        kinds: list[str] = []
        async with asyncio.timeout(30), http.get(f"{stack}/v1/sessions/{sid}/events") as resp:
            assert resp.status == 200
            async for raw in resp.content:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    kinds.append(line.removeprefix("event: "))
        view: dict[str, Any] = {}
        async with http.get(f"{stack}/v1/sessions/{sid}") as resp:
            view = await resp.json()
    assert kinds[0] == "requested"
    assert kinds[-1] == "finished"
    assert kinds.count("committed") == 3
    assert view["status"] == "finished"
    assert view["answer"] == "7"
    steps = [(s["role"], s["trigger"]) for s in view["steps"]]
    assert steps == [("lrm", "priming"), ("srm", None), ("srm", None)]
    # The workers published their servers' limits, and the gateway read them: beyond them is a 422.
    beyond = {"question": "q?", "policy": "specreason", "params": {"judge_top_n": 40}}
    async with aiohttp.ClientSession() as http:
        for _ in range(60):
            async with http.post(f"{stack}/v1/sessions", json=beyond) as resp:
                if resp.status == 422:
                    break
            await asyncio.sleep(0.2)
    assert resp.status == 422
    # Least privilege that still works: not one call of any service was refused.
    log = auth_nats.log_text()
    assert "Violation" not in log, log[-3000:]
    assert "Authorization Error" not in log
    # Each service really connected as its own user.
    async with aiohttp.ClientSession() as http, http.get(f"{auth_nats.monitor_url}/connz?auth=true") as resp:
        users = {c.get("authorized_user") for c in (await resp.json())["connections"]}
    assert users >= EVERYONE
