"""kill -9 of a worker mid-step and of the orchestrator mid-session, each service its own process:
every session still finishes, with no step lost or duplicated. Backends: the load simulator (the test is
about the bus, not the models)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator

import nats
import pytest

from trigreason.nats_server import LocalNatsServer
from trigreason.proto import (
    SessionFinished,
    SessionParams,
    SessionRequested,
    StepCommitted,
    decode_message,
    encode,
    event_subject,
    session_events,
)
from trigreason.services.backend_sim import SimSettings, StepLength, make_app, start_server
from trigreason.services.runtime import BusSettings, ensure_topology

pytestmark = pytest.mark.slow


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    # ~0.5 s per step, so a kill lands mid-step; answers after 6 steps.
    settings = SimSettings(
        time_per_token_ms=25,
        step_tokens=StepLength("fixed", 20, 20),
        concurrency=16,
        answer_after=6,
        answer_p=1.0,
    )
    runner, url = await start_server(make_app(settings), host="127.0.0.1", port=0)
    yield url
    await runner.cleanup()


class Services:
    def __init__(self, nats_url: str, backend_url: str) -> None:
        self.env = {
            **os.environ,
            "TRIGREASON_NATS_URL": nats_url,
            "TRIGREASON_SRM_URL": backend_url,
            "TRIGREASON_LRM_URL": backend_url,
            "TRIGREASON_ACK_WAIT_S": "2",
            "OTEL_SDK_DISABLED": "true",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "trigreason", "serve", name], env=self.env, stderr=subprocess.DEVNULL
        )

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_kill_9_of_a_worker_and_of_the_orchestrator(simulator: str) -> None:
    async with LocalNatsServer() as server:
        services = Services(server.url, simulator)
        try:
            for name in ("orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker"):
                services.start(name)
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_topology(js, BusSettings(nats_url=server.url))
            sessions = [f"crash{i}" for i in range(4)]
            for i, sid in enumerate(sessions):
                params = SessionParams(priming_steps=1, rho=0.9, seed=i, max_steps=40)
                await js.publish(
                    event_subject(sid, "requested"),
                    encode(SessionRequested(session_id=sid, question=f"Problem {i}", params=params)),
                    headers={"Nats-Msg-Id": f"{sid}.requested"},
                )

            committed: Counter[tuple[str, int]] = Counter()
            finished: set[str] = set()
            progress = asyncio.Event()

            async def until_committed(n: int) -> None:
                while len(committed) < n:
                    progress.clear()
                    await progress.wait()

            sub = await js.subscribe(session_events(">"), ordered_consumer=True)

            async def watch() -> None:
                async for msg in sub.messages:
                    ev = decode_message(msg.data)
                    if isinstance(ev, StepCommitted):
                        committed[(ev.session_id, ev.index)] += 1
                        progress.set()
                    elif isinstance(ev, SessionFinished):
                        finished.add(ev.session_id)
                        if finished == set(sessions):
                            return

            watcher = asyncio.create_task(watch())
            # Let every session get going, then kill the SRM worker while its steps are in flight.
            await asyncio.wait_for(until_committed(4), 60)
            services.kill9("srm-worker")
            await asyncio.sleep(0.3)
            services.start("srm-worker")
            # Then the orchestrator, mid-session.
            mark = len(committed)
            await asyncio.wait_for(until_committed(mark + 3), 60)
            services.kill9("orchestrator")
            await asyncio.sleep(0.3)
            services.start("orchestrator")
            await asyncio.wait_for(watcher, 120)
            await nc.close()
        finally:
            services.stop_all()

    assert finished == set(sessions)
    duplicated = {k: n for k, n in committed.items() if n != 1}
    assert not duplicated, f"steps committed more than once: {duplicated}"
    for sid in sessions:
        indices = sorted(i for s, i in committed if s == sid)
        assert indices == list(range(len(indices))), f"{sid}: steps lost: {indices}"
