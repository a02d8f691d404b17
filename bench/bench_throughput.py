"""Cluster throughput with an instant backend: 100, 500 and 1,000 concurrent sessions.

The simulator answers at once (0 ms per token, no prefill, thousands of generations at a time), so what
is measured is the cluster itself: nats-server plus the orchestrator, trigger-evaluator and SRM worker,
each its own process (``--replicas`` of each). Sessions are SRM-only and short: every step is an SRM
command -> worker -> ``StepGenerated`` -> trigger-evaluator -> ``Verdict`` -> orchestrator ->
``StepCommitted`` + the next command; each session answers on its ``--steps``-th step.

Per level, all sessions are submitted at once; steps/s = steps committed / (first submit -> last session
finished), as seen by a subscriber. After all levels the event stream itself (JetStream, what clients
replay) is read back and ``StepCommitted`` counted per (session, index): duplicated = extra copies,
lost = indices missing from a finished session's 0..steps-1. Sessions not finished within the level's
time bound are reported as unfinished. Backend calls beyond the committed steps (redeliveries, retries)
come from the simulator's own counter.

    uv run --frozen python bench/bench_throughput.py [--quick] [--levels 100,500,1000] [--steps 9]

Target: >= 1,000 steps/s, no step lost or duplicated. Writes bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nats
from _harness import (
    Processes,
    Status,
    console,
    met,
    read_events,
    run_benchmark,
    service_env,
    session_params,
    simulator_calls,
    start_service,
    start_simulators,
    submit,
)
from nats.aio.msg import Msg
from rich.table import Table

from trigreason.nats_server import LocalNatsServer
from trigreason.proto import (
    SessionFailed,
    SessionFinished,
    StepCommitted,
    decode_message,
    event_filter,
)
from trigreason.services.runtime import BusSettings, ensure_topology

NAME = "throughput"
TARGET_STEPS_S = 1000.0


@dataclass
class Live:
    """What a subscriber sees per level (session id prefix): for progress and timing only."""

    steps: Counter[str] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)
    last_end: dict[str, float] = field(default_factory=dict)

    async def on_message(self, msg: Msg) -> None:
        parts = msg.subject.split(".")
        level = parts[2].split("-", 1)[0]
        if parts[3] == "committed":
            self.steps[level] += 1
        else:
            self.ended[level] += 1
            self.last_end[level] = time.perf_counter()


def level_tag(level: int) -> str:
    return f"L{level}"


async def run_level(
    js: Any,
    live: Live,
    level: int,
    steps: int,
    timeout_s: float,
    http: aiohttp.ClientSession,
    sim_url: str,
    procs: Processes,
    tag: str | None = None,
) -> dict[str, Any]:
    tag = tag or level_tag(level)
    params = session_params(policy="srm-only", max_steps=steps + 8, seed=0)
    calls_before = await simulator_calls(http, sim_url)
    cpu_before = procs.cpu_seconds()
    started = time.perf_counter()
    deadline = started + timeout_s
    sids = [f"{tag}-{i}" for i in range(level)]

    async def submit_all() -> None:
        for k in range(0, level, 100):  # 100 publishes in flight at a time
            await asyncio.gather(
                *(
                    submit(js, sid, f"Problem {sid}: compute {i} + {i}.", params)
                    for i, sid in enumerate(sids[k : k + 100], k)
                )
            )

    submitting = asyncio.create_task(submit_all())
    with Status(f"{level} sessions", level * steps) as status:
        while live.ended[tag] < level and time.perf_counter() < deadline:
            await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - started
            status.update(
                live.steps[tag],
                f"{live.ended[tag]}/{level} sessions done, {live.steps[tag] / elapsed:,.0f} steps/s",
            )
    await submitting
    finished_all = live.ended[tag] >= level
    ended_at = live.last_end.get(tag, time.perf_counter()) if finished_all else time.perf_counter()
    elapsed = ended_at - started
    await asyncio.sleep(0.3)  # let the last metrics settle
    calls = await simulator_calls(http, sim_url) - calls_before
    cpu = {k: v - cpu_before.get(k, 0.0) for k, v in procs.cpu_seconds().items()}
    return {
        "cpu_s_by_process": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_cores_by_process": {k: round(v / elapsed, 2) for k, v in cpu.items()} if elapsed > 0 else {},
        "sessions": level,
        "elapsed_s": elapsed,
        "timed_out": not finished_all,
        "steps_seen": live.steps[tag],
        "steps_per_s": live.steps[tag] / elapsed if elapsed > 0 else math.nan,
        "backend_calls": calls,
    }


def verify(
    committed: list[StepCommitted], ends: list[SessionFinished | SessionFailed], level: int
) -> dict[str, Any]:
    """From the event stream: per (session, index) counts, against each finished session's step count."""
    tag = level_tag(level) + "-"
    copies = Counter((c.session_id, c.index) for c in committed if c.session_id.startswith(tag))
    finished: dict[str, int] = {}
    failed = 0
    end_copies = Counter(e.session_id for e in ends if e.session_id.startswith(tag))
    for e in ends:
        if not e.session_id.startswith(tag):
            continue
        if isinstance(e, SessionFinished):
            finished[e.session_id] = e.steps
        else:
            failed += 1
    lost = 0
    unexpected = 0
    for sid, n in finished.items():
        have = {i for (s, i) in copies if s == sid}
        lost += len(set(range(n)) - have)
        unexpected += len(have - set(range(n)))
    per_session = Counter(s for (s, _) in copies)
    lengths = [per_session[s] for s in finished]
    return {
        "sessions_finished": len(finished),
        "sessions_failed": failed,
        "sessions_unfinished": level - len(finished) - failed,
        "steps_committed": len(copies),
        "steps_duplicated": sum(n - 1 for n in copies.values() if n > 1),
        "steps_lost": lost,
        "steps_beyond_end": unexpected,
        "end_events_duplicated": sum(n - 1 for n in end_copies.values() if n > 1),
        "steps_per_finished_session": [min(lengths), max(lengths)] if lengths else [],
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    sim = {
        "time_per_token_ms": 0.0,
        "prefill_ms": 0.0,
        "step_tokens": "fixed:8",
        "answer_after": args.steps - 1,  # the step at index steps-1 answers: `steps` steps per session
        "answer_p": 1.0,
        "hesitation_p": 0.1,
        "concurrency": 8192,
        "seed": 0,
    }
    services = ("orchestrator", "trigger-evaluator", "srm-worker")
    levels: list[dict[str, Any]] = []
    with Processes() as procs:
        async with LocalNatsServer() as server:
            [url] = await start_simulators(procs, [sim])
            env = service_env(server.url, srm_url=url, concurrency=args.concurrency)
            labels = []
            for name in services:
                for r in range(args.replicas):
                    labels.append(f"{name}-{r}")
                    start_service(procs, labels[-1], name, env)
            await procs.wait_log(labels, "consuming")
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_topology(js, BusSettings(nats_url=server.url))
            live = Live()
            for kind in ("committed", "finished", "failed"):
                await nc.subscribe(event_filter(kind), cb=live.on_message)
            try:
                async with aiohttp.ClientSession() as http:
                    # Warm-up, not counted: every process's first-use paths, connection pools.
                    await run_level(js, live, 20, args.steps, args.timeout, http, url, procs, tag="warmup")
                    for level in args.levels:
                        levels.append(
                            await run_level(js, live, level, args.steps, args.timeout, http, url, procs)
                        )
                console.print("reading the event stream back ...")
                committed = [
                    m for m in map(decode_message, await read_events(js, event_filter("committed")))
                    if isinstance(m, StepCommitted)
                ]  # fmt: skip
                ends = [
                    m
                    for subject in (event_filter("finished"), event_filter("failed"))
                    for m in map(decode_message, await read_events(js, subject))
                    if isinstance(m, SessionFinished | SessionFailed)
                ]
            finally:
                await nc.close()
                procs.stop_all()  # before the NATS server goes
    for row in levels:
        row.update(verify(committed, ends, row["sessions"]))
        row["extra_backend_calls"] = row["backend_calls"] - row["steps_committed"]
    ok_rate = all(r["steps_per_s"] >= TARGET_STEPS_S for r in levels)
    ok_exact = all(r["steps_lost"] == 0 and r["steps_duplicated"] == 0 for r in levels)
    return {
        "settings": {
            "simulator": sim,
            "policy": "srm-only",
            "steps_per_session": args.steps,
            "replicas_per_service": args.replicas,
            "service_concurrency": args.concurrency or "service default (8)",
            "services": "nats-server (file storage) + " + ", ".join(services) + ", one process per replica",
            "level_timeout_s": args.timeout,
        },
        "levels": levels,
        "targets": {
            "steps_per_s": {
                "target": TARGET_STEPS_S,
                "measured": {str(r["sessions"]): r["steps_per_s"] for r in levels},
                "met": ok_rate,
            },
            "lost_or_duplicated": {
                "target": 0,
                "measured": sum(r["steps_lost"] + r["steps_duplicated"] for r in levels),
                "met": ok_exact,
            },
        },
    }


def report(doc: dict[str, Any]) -> None:
    s = doc["settings"]
    table = Table(
        title=(
            f"Throughput, instant backend, srm-only sessions of {s['steps_per_session']} steps, "
            f"{s['replicas_per_service']} replica(s) per service"
        )
    )
    for col in (
        "sessions", "finished", "unfinished", "steps", "elapsed (s)", "steps/s", "lost", "duplicated",
        "extra backend calls",
    ):  # fmt: skip
        table.add_column(col, justify="right")
    for r in doc["levels"]:
        table.add_row(
            f"{r['sessions']:,}",
            str(r["sessions_finished"]),
            str(r["sessions_unfinished"] + r["sessions_failed"]),
            f"{r['steps_committed']:,}",
            f"{r['elapsed_s']:.1f}",
            f"{r['steps_per_s']:,.0f}",
            str(r["steps_lost"]),
            str(r["steps_duplicated"]),
            str(r["extra_backend_calls"]),
        )
    console.print(table)
    cpu = Table(title="CPU per committed step (ms of CPU time, all processes on this machine's cores)")
    names = sorted({k for r in doc["levels"] for k in r["cpu_s_by_process"]})
    cpu.add_column("sessions", justify="right")
    for n in names:
        cpu.add_column(n, justify="right")
    cpu.add_column("total", justify="right")
    cpu.add_column("cores busy", justify="right")
    for r in doc["levels"]:
        steps = max(1, r["steps_committed"])
        per = [r["cpu_s_by_process"].get(n, 0.0) * 1000 / steps for n in names]
        busy = sum(r["cpu_cores_by_process"].values())
        cpu.add_row(f"{r['sessions']:,}", *(f"{x:.2f}" for x in per), f"{sum(per):.2f}", f"{busy:.2f}")
    console.print(cpu)
    t = doc["targets"]
    rates = ", ".join(f"{k}: {v:,.0f}" for k, v in t["steps_per_s"]["measured"].items())
    console.print(
        f"steps/s by level ({rates}) (target >= {TARGET_STEPS_S:,.0f} at every level): "
        f"{met(t['steps_per_s']['met'])}"
    )
    console.print(
        f"steps lost or duplicated: {t['lost_or_duplicated']['measured']} (target 0): "
        f"{met(t['lost_or_duplicated']['met'])}"
    )
    for r in doc["levels"]:
        if r["timed_out"]:
            console.print(f"[yellow]{r['sessions']} sessions: not all finished within the time bound[/]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sessions of 4 steps")
    parser.add_argument("--levels", default="100,500,1000", help="concurrent sessions per level")
    parser.add_argument("--steps", type=int, default=None, help="steps per session (9; --quick 4)")
    parser.add_argument("--replicas", type=int, default=1, help="processes per service (1)")
    parser.add_argument("--concurrency", type=int, default=None, help="messages at once per replica")
    parser.add_argument("--timeout", type=float, default=None, help="bound per level in seconds (60; 30)")
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    args.steps = args.steps or (4 if args.quick else 9)
    args.timeout = args.timeout or (30.0 if args.quick else 60.0)
    run_benchmark(NAME, measure, report, args, measured=measured)


def measured(doc: dict[str, Any]) -> dict[str, object]:
    out: dict[str, object] = {}
    for r in doc["levels"]:
        out[f"steps/s at {r['sessions']} sessions"] = r["steps_per_s"]
        out[f"steps committed at {r['sessions']} sessions"] = r["steps_committed"]
        out[f"sessions finished at {r['sessions']} sessions"] = r["sessions_finished"]
    return out


if __name__ == "__main__":
    main()
