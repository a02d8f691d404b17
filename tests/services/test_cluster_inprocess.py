"""The services on a real nats-server, each with its own connection, driven through the bus.

The backends here are scripted: this tests the plumbing (routing, outbox, de-duplication, redelivery), and
the trajectory must be exactly what the in-process runner gives for the same script.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all, submit_and_wait
from tests.support import CONFIDENT, step
from trigreason.proto import (
    GeneratedStep,
    SessionFinished,
    SessionParams,
    StepCommitted,
    command_subject,
    dead_letter_subject,
    event_subject,
)
from trigreason.runner import run_session
from trigreason.services.orchestrator import Orchestrator
from trigreason.services.trigger_evaluator import TriggerEvaluator
from trigreason.services.worker import Worker

SRM_SCRIPT = [
    step("We add.", [CONFIDENT] * 6),  # offloaded
    step("Wait, 3 + 4?"),
    step("Hmm, 7?"),  # second hesitation: intervention
    step("So \\boxed{7}."),
]
LRM_SCRIPT = [step("Prime."), step("Add 3 and 4."), step("3 + 4 = 7."), step("Check: 7 - 4 = 3.")]


async def test_cluster_gives_the_same_trajectory_as_the_inprocess_runner(cluster: Cluster) -> None:
    params = SessionParams(priming_steps=1, k=2, m=2)
    await start_all(cluster, ScriptedBackend("srm", SRM_SCRIPT), ScriptedBackend("lrm", LRM_SCRIPT))
    events = await submit_and_wait(cluster.server.url, "c1", "What is 3 + 4?", params)
    committed = [e for e in events if isinstance(e, StepCommitted)]
    (end,) = [e for e in events if isinstance(e, SessionFinished)]

    reference = await run_session(
        "What is 3 + 4?",
        params,
        srm=ScriptedBackend("srm", SRM_SCRIPT),
        lrm=ScriptedBackend("lrm", LRM_SCRIPT),
        session_id="c1",
    )
    assert [(c.index, c.role, c.text, c.trigger) for c in committed] == [
        (s.index, s.role, s.text, s.trigger) for s in reference.steps
    ]
    assert [c.trigger for c in committed] == [
        "priming",
        "offload",
        None,
        "intervention",
        "intervention",
        None,
    ]
    assert end.answer == reference.answer == "7"
    for field in ("srm_tokens", "lrm_tokens", "srm_wasted_tokens", "triggers", "lrm_calls", "srm_calls"):
        assert getattr(end.stats, field) == getattr(reference.stats, field), field


class FlakyBackend(ScriptedBackend):
    """Crashes the worker's handler on chosen calls, as a worker dying mid-step would."""

    def __init__(self, name: str, steps: list[GeneratedStep], crash_on: set[int]) -> None:
        super().__init__(name, steps)
        self.calls = 0
        self.crash_on = crash_on

    async def generate(self, request: Any) -> Any:
        self.calls += 1
        if self.calls in self.crash_on:
            raise RuntimeError("worker died mid-step")
        return await super().generate(request)


async def test_a_crashed_step_is_redelivered_and_nothing_is_lost_or_duplicated(cluster: Cluster) -> None:
    srm = FlakyBackend("srm", [step("a"), step("b"), step("c"), step("\\boxed{1}")], crash_on={2, 4})
    await start_all(cluster, srm, ScriptedBackend("lrm"))
    events = await submit_and_wait(cluster.server.url, "c2", "q", SessionParams(policy="srm-only"))
    committed = [e for e in events if isinstance(e, StepCommitted)]
    assert [c.index for c in committed] == [0, 1, 2, 3]
    assert [c.text for c in committed] == ["a", "b", "c", "\\boxed{1}"]
    assert srm.calls == 6


async def test_garbage_is_dead_lettered_and_the_services_keep_serving(cluster: Cluster) -> None:
    await start_all(cluster, ScriptedBackend("srm", [step("\\boxed{2}")]), ScriptedBackend("lrm"))
    nc = await nats.connect(cluster.server.url)
    try:
        js = nc.jetstream()
        for subject in (
            command_subject("srm"),
            command_subject("lrm"),
            event_subject("x", "requested"),
            event_subject("x", "srm_step"),
            event_subject("x", "verdict"),
        ):
            await js.publish(subject, b"\xff\x00 not json")
        events = await submit_and_wait(cluster.server.url, "c3", "q", SessionParams(policy="srm-only"))
        assert isinstance(events[-1], SessionFinished)
        dlq = await js.subscribe(dead_letter_subject(">"), ordered_consumer=True)
        seen: set[str] = set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                async for msg in dlq.messages:
                    assert msg.headers is not None
                    assert msg.headers["Trig-Dead-Letter-Reason"].startswith("undecodable")
                    seen.add(msg.headers["Trig-Origin-Subject"])
                    if len(seen) == 5:
                        break
        assert len(seen) == 5
    finally:
        await nc.close()


async def test_specreason_reject_goes_through_the_lrm_worker_as_a_judge(cluster: Cluster) -> None:
    srm = ScriptedBackend("srm", [step("We add."), step("So \\boxed{7}.")])
    lrm = ScriptedBackend("lrm", [step("Add 3 and 4.")], judge_scores=[2, 8])
    await start_all(cluster, srm, lrm)
    events = await submit_and_wait(cluster.server.url, "c4", "3+4?", SessionParams(policy="specreason"))
    committed = [e for e in events if isinstance(e, StepCommitted)]
    assert [(c.role, c.trigger, c.text) for c in committed] == [
        ("lrm", "judge_reject", "Add 3 and 4."),
        ("srm", None, "So \\boxed{7}."),
    ]
    assert len(lrm.judge_prompts) == 2
    assert "We add." in lrm.judge_prompts[0]
    (end,) = [e for e in events if isinstance(e, SessionFinished)]
    assert (end.stats.judge_calls, end.stats.triggers) == (2, {"judge_reject": 1})


class CountingOrchestrator(Orchestrator):
    def __init__(self, bus: Any) -> None:
        super().__init__(bus)
        self.handled = 0

    async def handle(self, delivery: Any) -> Any:
        self.handled += 1
        return await super().handle(delivery)


async def test_orchestrator_replicas_take_turns_on_one_session_without_losing_a_step(
    cluster: Cluster,
) -> None:
    # Each replica caches the snapshot it wrote; when another replica moves the session on, the cached
    # copy is stale and only the compare-and-set catches it: the trajectory must still be exact.
    replicas: list[CountingOrchestrator] = []

    def make(bus: Any) -> CountingOrchestrator:
        replicas.append(CountingOrchestrator(bus))
        return replicas[-1]

    for _ in range(3):
        await cluster.start("orchestrator", make, concurrency=1)
    await cluster.start("trigger-evaluator", TriggerEvaluator)
    await cluster.start("srm-worker", lambda b: Worker(b, "srm", ScriptedBackend("srm", SRM_SCRIPT)))
    await cluster.start("lrm-worker", lambda b: Worker(b, "lrm", ScriptedBackend("lrm", LRM_SCRIPT)))
    params = SessionParams(priming_steps=1, k=2, m=2)
    events = await submit_and_wait(cluster.server.url, "c5", "What is 3 + 4?", params)
    committed = [e for e in events if isinstance(e, StepCommitted)]
    reference = await run_session(
        "What is 3 + 4?",
        params,
        srm=ScriptedBackend("srm", SRM_SCRIPT),
        lrm=ScriptedBackend("lrm", LRM_SCRIPT),
        session_id="c5",
    )
    assert [(c.index, c.role, c.text) for c in committed] == [
        (s.index, s.role, s.text) for s in reference.steps
    ]
    assert sum(1 for r in replicas if r.handled) >= 2, [r.handled for r in replicas]
