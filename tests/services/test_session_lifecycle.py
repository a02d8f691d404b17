"""A session's life on a real nats-server with the services on the bus: whatever fails, it ends in
exactly one terminal event, and a late redelivery re-emits nothing. Backends are the load simulator
speaking the TGI protocol over HTTP (these tests are about the bus and the lifecycle, not the models)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.js.api import KeyValueConfig

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all
from tests.support import step
from trigreason.nats_server import LocalNatsServer
from trigreason.proto import (
    DEAD_LETTER_STREAM,
    EVENT_STREAM,
    SESSION_BUCKET,
    DeadlineReached,
    GeneratedStep,
    Message,
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionRequested,
    SessionSnapshot,
    StaleEvent,
    StepCommitted,
    StepFailed,
    StepGenerated,
    Verdict,
    command_subject,
    decode_message,
    encode,
    event_subject,
    session_events,
)
from trigreason.services.backend_sim import SimSettings, StepLength, make_app, start_server
from trigreason.services.orchestrator import Orchestrator, event_key
from trigreason.services.runtime import Bus, BusSettings, Defer, Delivery, ensure_topology
from trigreason.services.trigger_evaluator import TriggerEvaluator
from trigreason.services.worker import Worker
from trigreason.services.worker.backends import TgiBackend


async def _sim(**overrides: object) -> AsyncIterator[str]:
    settings = SimSettings(
        **{  # type: ignore[arg-type]
            "time_per_token_ms": 1.0,
            "step_tokens": StepLength("fixed", 8, 8),
            "concurrency": 16,
            "answer_after": 3,
            "answer_p": 1.0,
            **overrides,
        }
    )
    runner, url = await start_server(make_app(settings), host="127.0.0.1", port=0)
    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.fixture
async def sim() -> AsyncIterator[str]:
    async for url in _sim():
        yield url


@pytest.fixture
async def slow_sim() -> AsyncIterator[str]:
    async for url in _sim(time_per_token_ms=500.0):  # 4 s a step
        yield url


@pytest.fixture
async def strict_judge_sim() -> AsyncIterator[str]:
    async for url in _sim(max_top_n_tokens=5):  # stock TGI's --max-top-n-tokens
        yield url


async def _start(cluster: Cluster, url: str) -> None:
    srm, lrm = TgiBackend(url), TgiBackend(url)
    cluster.on_close(srm.aclose, lrm.aclose)
    await start_all(cluster, srm, lrm)


async def _events(url: str, session_id: str, *, wait_s: float = 20.0) -> list[Message]:
    """The session's stored events once it has a terminal one."""
    nc = await nats.connect(url)
    try:
        sub = await nc.jetstream().subscribe(session_events(session_id), ordered_consumer=True)
        events: list[Message] = []
        async with asyncio.timeout(wait_s):
            async for msg in sub.messages:
                try:
                    events.append(decode_message(msg.data))
                except msgspec.DecodeError:
                    continue  # bytes a test published on purpose
                if isinstance(events[-1], SessionFinished | SessionFailed):
                    return events
    finally:
        await nc.close()
    raise AssertionError("unreachable")


async def _request(url: str, session_id: str, params: SessionParams) -> None:
    nc = await nats.connect(url)
    try:
        request = SessionRequested(session_id=session_id, question="What is 3 + 4?", params=params)
        await nc.jetstream().publish(
            event_subject(session_id, "requested"),
            encode(request),
            headers={"Nats-Msg-Id": f"{session_id}.req"},
        )
    finally:
        await nc.close()


def _terminal(events: list[Message]) -> SessionFinished | SessionFailed:
    ends = [e for e in events if isinstance(e, SessionFinished | SessionFailed)]
    assert len(ends) == 1
    return ends[0]


async def test_a_rejected_judge_call_fails_the_session(cluster: Cluster, strict_judge_sim: str) -> None:
    """Regression: the judge's StepFailed carried the judge command's id and was dropped as stale."""
    await _start(cluster, strict_judge_sim)
    await _request(cluster.server.url, "j1", SessionParams(policy="specreason", judge_top_n=20))
    end = _terminal(await _events(cluster.server.url, "j1"))
    assert isinstance(end, SessionFailed)
    assert end.code == "request_refused"  # the server's own 4xx (was backend_rejected)
    assert "judge" in end.message
    assert "top_n" in end.message
    # Within the server's limit the same session works.
    await _request(cluster.server.url, "j2", SessionParams(policy="specreason", judge_top_n=5))
    assert isinstance(_terminal(await _events(cluster.server.url, "j2")), SessionFinished)


async def test_likelihood_on_the_simulator_scores_each_srm_step(cluster: Cluster, sim: str) -> None:
    # The scoring call over real HTTP: decoder_input_details on the simulator's TGI protocol.
    await _start(cluster, sim)
    params = SessionParams(policy="likelihood", priming_steps=1, policy_params={"threshold": -1.0})
    await _request(cluster.server.url, "lk-sim", params)
    events = await _events(cluster.server.url, "lk-sim")
    end = _terminal(events)
    assert isinstance(end, SessionFinished), end
    verdicts = [e for e in events if isinstance(e, Verdict)]
    assert verdicts
    assert all(v.score_stat is not None and v.scored_tokens > 0 for v in verdicts)
    assert all((v.decision == "replace") == (v.score_stat < -1.0) for v in verdicts)  # type: ignore[operator]
    assert end.stats.score_calls == len(verdicts)
    assert end.stats.score_prompt_tokens > 0
    assert end.stats.judge_calls == 0


async def test_a_session_past_its_deadline_fails(cluster: Cluster, slow_sim: str) -> None:
    await _start(cluster, slow_sim)
    started = asyncio.get_running_loop().time()
    await _request(cluster.server.url, "d1", SessionParams(priming_steps=1, deadline_s=1.0))
    end = _terminal(await _events(cluster.server.url, "d1", wait_s=10.0))
    assert isinstance(end, SessionFailed)
    assert end.code == "deadline_exceeded"
    assert asyncio.get_running_loop().time() - started < 3.5  # the first step alone takes 4 s


@pytest.mark.parametrize(
    ("subject", "payload"),
    [
        # an event that names the session but decodes as nothing the orchestrator knows
        (event_subject("x1", "lrm_step"), b'{"type": "StepGenerated.v1", "session_id": "x1", "step": 7}'),
        # a command whose only readable field is the session (regression: a command id of the wrong type
        # hid the session, and the session finished as if nothing had happened)
        (
            command_subject("srm"),
            b'{"type": "GenerateStep.v1", "session_id": "x1", "command_id": 42, "role": 3}',
        ),
    ],
)
async def test_a_dead_lettered_message_ends_its_session(
    cluster: Cluster, slow_sim: str, subject: str, payload: bytes
) -> None:
    await _start(cluster, slow_sim)
    url = cluster.server.url
    await _request(url, "x1", SessionParams(priming_steps=1))
    await asyncio.sleep(0.5)  # the priming step is under way
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.publish(subject, payload)
        # Garbage that names no session: dead-lettered, and nothing else happens.
        await js.publish(event_subject("zz", "verdict"), b"\xff\x00 not json")
        end = _terminal(await _events(url, "x1", wait_s=10.0))
        assert isinstance(end, SessionFailed)
        assert end.code == "dead_lettered"
        assert subject in end.message
        info = await js.stream_info(DEAD_LETTER_STREAM)
        assert info.state.messages == 2
        # It names no session that exists: nothing is started or failed.
        assert not await _has_subject(js, event_subject("zz", "failed"))
    finally:
        await nc.close()


async def _has_subject(js: nats.js.JetStreamContext, subject: str) -> bool:
    info = await js.stream_info(EVENT_STREAM, subjects_filter=subject)
    return bool(info.state.subjects)


async def _count(js: nats.js.JetStreamContext, session_id: str) -> int:
    info = await js.stream_info(EVENT_STREAM, subjects_filter=session_events(session_id))
    return sum((info.state.subjects or {}).values())


async def test_a_late_redelivery_re_emits_nothing(nats_server: LocalNatsServer, sim: str) -> None:
    """Regression: every stale event republished the outbox, so after JetStream's duplicate window a
    redelivery stored StepCommitted and SessionFinished again."""
    settings = BusSettings(nats_url=nats_server.url, storage="memory", duplicate_window_s=1.0, ack_wait_s=2.0)
    cluster = Cluster(nats_server, settings)
    try:
        await _start(cluster, sim)
        await _request(nats_server.url, "r1", SessionParams(priming_steps=1))
        events = await _events(nats_server.url, "r1")
        assert isinstance(_terminal(events), SessionFinished)
    finally:
        await cluster.close()
    bus = await Bus.connect(settings, name="redeliver")
    try:
        orchestrator = Orchestrator(bus)
        before = await _count(bus.js, "r1")
        await asyncio.sleep(1.5)  # past the duplicate window
        # Every event the orchestrator took, delivered once more: each is stale now.
        stored = await _stored(bus, "r1")
        for event in stored:
            await _redeliver(orchestrator, event)
        assert await _count(bus.js, "r1") == before
        committed = [e for e in await _stored_all(bus, "r1") if isinstance(e, StepCommitted)]
        assert len({c.index for c in committed}) == len(committed)
    finally:
        await bus.close()


async def test_a_crash_between_snapshot_and_publish_is_completed_once(
    nats_server: LocalNatsServer, sim: str
) -> None:
    """The outbox's own cause, redelivered, publishes exactly what is missing from the stream."""
    settings = BusSettings(nats_url=nats_server.url, storage="memory", duplicate_window_s=1.0, ack_wait_s=2.0)
    cluster = Cluster(nats_server, settings)
    try:
        await _start(cluster, sim)
        await _request(nats_server.url, "c1", SessionParams(priming_steps=1))
        assert isinstance(_terminal(await _events(nats_server.url, "c1")), SessionFinished)
    finally:
        await cluster.close()
    bus = await Bus.connect(settings, name="crash")
    try:
        # The crash: the final decision's events never reached the stream (purge the terminal event).
        await bus.js.purge_stream(EVENT_STREAM, subject=event_subject("c1", "finished"))
        before = await _count(bus.js, "c1")
        await asyncio.sleep(1.5)
        snapshot = await _snapshot(bus, "c1")
        (cause,) = [e for e in await _stored(bus, "c1") if event_key(e) == snapshot.outbox_cause]  # type: ignore[arg-type]
        orchestrator = Orchestrator(bus)
        await _redeliver(orchestrator, cause)
        await _redeliver(orchestrator, cause)
        assert await _count(bus.js, "c1") == before + 1  # the finished event, once
        assert isinstance(_terminal(await _stored_all(bus, "c1")), SessionFinished)
    finally:
        await bus.close()


async def _snapshot(bus: Bus, session_id: str) -> SessionSnapshot:
    entry = await bus.kv.get(session_id)
    assert entry.value is not None
    return msgspec.json.decode(entry.value, type=SessionSnapshot)


async def _stored_all(bus: Bus, session_id: str) -> list[Message]:
    sub = await bus.js.subscribe(session_events(session_id), ordered_consumer=True)
    out: list[Message] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except nats.errors.TimeoutError:
                return out
            with contextlib.suppress(msgspec.DecodeError):
                out.append(decode_message(msg.data))
    finally:
        await sub.unsubscribe()


async def _stored(bus: Bus, session_id: str) -> list[Message]:
    """The events of a session that the orchestrator consumes."""
    return [
        e
        for e in await _stored_all(bus, session_id)
        if isinstance(e, SessionRequested | Verdict | StepFailed)
        or (isinstance(e, StepGenerated) and e.role == "lrm")
    ]


async def _redeliver(orchestrator: Orchestrator, event: Message) -> None:
    with pytest.raises(StaleEvent):
        await orchestrator.handle(Delivery(event, "redelivery", 2, None))  # type: ignore[arg-type]


async def test_session_snapshots_expire_with_the_events(nats_server: LocalNatsServer) -> None:
    """Regression: the session bucket had no TTL while events expired after 7 days; an existing bucket
    from an older deployment is brought up to date."""
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.create_key_value(KeyValueConfig(bucket=SESSION_BUCKET, history=1))  # the old, unbounded one
        settings = BusSettings(nats_url=nats_server.url, event_max_age_s=3600.0, session_max_bytes=10**8)
        await ensure_topology(js, settings)
        kv_info = await js.stream_info(f"KV_{SESSION_BUCKET}")
        events_info = await js.stream_info(EVENT_STREAM)
        assert kv_info.config.max_age == events_info.config.max_age == 3600.0
        assert kv_info.config.max_bytes == 10**8
        assert events_info.config.max_bytes == settings.max_bytes("events") == 4 * 1024**3  # file storage
        assert kv_info.config.max_msg_size == events_info.config.max_msg_size == settings.max_message_bytes
    finally:
        await nc.close()


@pytest.fixture
async def long_step_sim() -> AsyncIterator[str]:
    # 4,096-token steps (the per-step cap) that never reach an answer.
    async for url in _sim(
        time_per_token_ms=0.0,
        step_tokens=StepLength("fixed", 4096, 4096),
        answer_after=10**6,
        max_total_tokens=200_000,
    ):
        yield url


@pytest.mark.parametrize("policy", ["specreason", "lrm-only"])
async def test_a_session_at_the_size_bounds_finishes_within_nats_limits(
    cluster: Cluster, long_step_sim: str, policy: str
) -> None:
    """The largest request allowed (max_tokens and step_max_tokens at their bounds, SpecReason's judge
    prompts the biggest messages) ends cleanly: no message exceeds NATS' max_payload on the way."""
    await _start(cluster, long_step_sim)
    params = SessionParams(
        policy=policy,
        judge_threshold=0.0,  # SpecReason accepts every SRM step: every message carries the context twice
        max_tokens=65_536,
        step_max_tokens=4096,
        max_steps=100_000,
    )
    await _request(cluster.server.url, f"big-{policy}", params)
    events = await _events(cluster.server.url, f"big-{policy}", wait_s=60.0)
    end = _terminal(events)
    assert isinstance(end, SessionFinished), end
    assert end.reason == "context_limit"
    nc = await nats.connect(cluster.server.url)
    try:
        info = await nc.jetstream().stream_info(DEAD_LETTER_STREAM)
        assert info.state.messages == 0
    finally:
        await nc.close()


async def test_an_answer_too_large_for_the_bus_fails_its_step_at_once(cluster: Cluster) -> None:
    """Found by make chaos (backend-oversized): the worker retried a 2 MB answer that could never be
    published until its deliveries ran out; now the step fails at once with a code that says why."""
    huge = GeneratedStep(text="x" * (2 * 1024 * 1024), token_logprobs=(-1.0,))
    lrm = ScriptedBackend("lrm", default=huge)
    await start_all(cluster, ScriptedBackend("srm", default=huge), lrm)
    started = asyncio.get_running_loop().time()
    await _request(cluster.server.url, "big1", SessionParams(priming_steps=1))
    end = _terminal(await _events(cluster.server.url, "big1"))
    assert isinstance(end, SessionFailed)
    assert end.code == "result_too_large"
    assert len(lrm.requests) == 1  # not retried
    assert asyncio.get_running_loop().time() - started < 10.0


async def test_a_list_of_nats_servers_is_accepted(nats_server: LocalNatsServer) -> None:
    """TRIGREASON_NATS_URL may name several servers of a cluster; any reachable one will do."""
    settings = BusSettings.from_env(
        {"TRIGREASON_NATS_URL": f"nats://127.0.0.1:1, {nats_server.url}", "TRIGREASON_NATS_STORAGE": "memory"}
    )
    bus = await Bus.connect(settings, name="list")
    try:
        assert bus.nc.is_connected
    finally:
        await bus.nc.close()


class _FlakyCommitBus:
    """The orchestrator's bus, whose first publish of a chosen StepCommitted fails, as a publish does when
    the stream's leader dies mid-publish in a JetStream cluster."""

    def __init__(self, bus: Bus, fail_index: int) -> None:
        self._bus = bus
        self._fail_index = fail_index
        self.failed = False
        self.published: list[Message] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._bus, name)

    async def publish(self, message: Message, **kwargs: object) -> None:
        if isinstance(message, StepCommitted) and message.index == self._fail_index and not self.failed:
            self.failed = True
            raise TimeoutError("nats: timeout (the stream leader went away)")
        self.published.append(message)
        await self._bus.publish(message, **kwargs)  # type: ignore[arg-type]


async def test_a_failed_commit_publish_holds_the_next_command_back(cluster: Cluster) -> None:
    """Regression (make chaos, cluster3-kill-leader: 2 lost): the next step's command went out beside a
    StepCommitted whose publish failed; the session moved on and the step was missing for good. Now the
    command waits for the event, and the redelivery publishes both."""
    final = step("So \\boxed{7}.")
    flaky: list[_FlakyCommitBus] = []

    def make(bus: Bus) -> Orchestrator:
        wrapped = _FlakyCommitBus(bus, fail_index=1)
        flaky.append(wrapped)
        return Orchestrator(wrapped)  # type: ignore[arg-type]

    await cluster.start("orchestrator", make)
    await cluster.start("trigger-evaluator", TriggerEvaluator)
    srm = ScriptedBackend("srm", [step("We add."), step("Three and four."), final])
    await cluster.start("srm-worker", lambda b: Worker(b, "srm", srm))
    await cluster.start(
        "lrm-worker", lambda b: Worker(b, "lrm", ScriptedBackend("lrm", default=step("Prime.")))
    )
    await _request(cluster.server.url, "f1", SessionParams(priming_steps=1, rho=1.0))
    events = await _events(cluster.server.url, "f1", wait_s=20.0)
    assert isinstance(_terminal(events), SessionFinished)
    assert flaky[0].failed
    committed = [e.index for e in events if isinstance(e, StepCommitted)]
    assert committed == list(range(len(committed)))  # no gap, no repeat


class _CountingKvBus:
    """The orchestrator's bus, counting the reads of the session store."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._bus, name)

    @property
    def kv(self) -> object:
        outer = self

        class _Kv:
            def __getattr__(self, name: str) -> object:
                return getattr(outer._bus.kv, name)

            async def get(self, key: str) -> object:
                outer.reads += 1
                return await outer._bus.kv.get(key)

        return _Kv()


async def test_a_deadline_timers_first_delivery_does_not_read_the_store(nats_server: LocalNatsServer) -> None:
    """The timer's first delivery, right after its session started, read the snapshot back from the store
    for every session (3.5% of the orchestrator's profile in bench_throughput --quick). It waits without a
    read now; each later delivery reads, and drops the timer once its session has ended."""
    bus = await Bus.connect(BusSettings(nats_url=nats_server.url, storage="memory"), name="timers")
    counting = _CountingKvBus(bus)
    try:
        early = Orchestrator(counting, clock=lambda: 1000.0)  # type: ignore[arg-type]
        request = SessionRequested(
            session_id="d1", question="q", params=SessionParams(deadline_s=20.0), requested_at=1000.0
        )
        await early.handle(Delivery(request, "requested", 1, None))  # type: ignore[arg-type]
        timer = DeadlineReached(session_id="d1", deadline_at=1020.0)

        def delivery(n: int) -> Delivery[DeadlineReached]:
            return Delivery(timer, "timer", n, None)  # type: ignore[arg-type]

        reads = counting.reads
        assert await early.handle_timer(delivery(1)) == Defer(20.0)
        assert counting.reads == reads  # the first delivery: no read
        assert await early.handle_timer(delivery(2)) == Defer(20.0)  # read, found running
        assert counting.reads == reads + 1
        late = Orchestrator(counting, clock=lambda: 1021.0)  # type: ignore[arg-type]
        assert await late.handle_timer(delivery(3)) == "ack"  # due: the session fails
        assert (await _snapshot(bus, "d1")).phase == "failed"
        assert await early.handle_timer(delivery(4)) == "ack"  # ended: read, and the timer dropped
    finally:
        await bus.close()
