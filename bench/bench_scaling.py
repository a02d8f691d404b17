"""SRM-worker scaling: 1 -> 2 -> 4 replicas, one request at a time per replica, 50 ms per step.

Each SRM worker replica is its own process with ``TRIGREASON_CONCURRENCY=1`` (one step at a time) and its
own simulator server with ``concurrency=1`` (10 tokens x 5 ms, no prefill: 50 ms per step). One server
per replica, not one shared server with concurrency N: with a shared server a replica that took more
than one request at a time could use the other replicas' slots and the figure would measure the server;
with its own single-slot server a replica can only ever do one step per 50 ms, so throughput can grow
only by adding replicas, which is what is measured. (At concurrency 1 per replica the two set-ups offer
the same capacity; the per-replica one also shows, from each server's counter, how evenly the shared
JetStream consumer spreads the work.) The orchestrator and trigger-evaluator are one process each.

Every level starts from a fresh nats-server and fresh services, submits ``--sessions`` SRM-only sessions
that never answer (enough outstanding steps to keep 4 replicas busy), waits a warm-up, then counts
``StepCommitted`` events seen in a fixed window. Ideal: 20 steps/s per replica. Levels run 1, 2, 4 and
then, in the second round, 4, 2, 1; the figure per level is the mean of its rounds.

    uv run --frozen python bench/bench_scaling.py [--quick] [--replicas 1,2,4] [--window 10]

Target: >= 3.6x the one-replica throughput at 4 replicas. Writes bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import statistics
import time
from typing import Any

import aiohttp
import nats
from _harness import (
    Processes,
    Status,
    console,
    met,
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
from trigreason.proto import event_filter
from trigreason.services.runtime import BusSettings, ensure_topology

NAME = "scaling"
MAX_TOKENS = 65_536  # SessionParams' bound on max_tokens
STEP_MS = 50.0
TARGET_RATIO_AT_4 = 3.6
SIM = {
    "time_per_token_ms": 5.0,
    "prefill_ms": 0.0,
    "step_tokens": "fixed:9",  # 9 tokens + the step delimiter = 10 tokens = 50 ms
    "answer_after": 1_000_000,  # never answers: sessions run until the level is over
    "hesitation_p": 0.1,
    "concurrency": 1,
    "seed": 0,
}


async def run_level(
    replicas: int, args: argparse.Namespace, status: Status, done_before: float
) -> dict[str, Any]:
    seen: list[float] = []

    async def on_committed(msg: Msg) -> None:
        seen.append(time.perf_counter())

    with Processes() as procs:
        async with LocalNatsServer() as server:
            urls = await start_simulators(procs, [SIM] * replicas)
            labels = ["orchestrator", "trigger-evaluator"]
            for name in labels:
                start_service(procs, name, name, service_env(server.url))
            for r, url in enumerate(urls):
                labels.append(f"srm-worker-{r}")
                start_service(
                    procs, labels[-1], "srm-worker", service_env(server.url, srm_url=url, concurrency=1)
                )
            await procs.wait_log(labels, "consuming")
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream()
                await ensure_topology(js, BusSettings(nats_url=server.url))
                await nc.subscribe(event_filter("committed"), cb=on_committed)
                # The largest budget a request may ask for: far more than a level commits (about 20
                # steps of 10 tokens per session), so no session ends inside the window.
                params = session_params(policy="srm-only", max_steps=100_000, max_tokens=MAX_TOKENS)
                async with aiohttp.ClientSession() as http:
                    started = time.perf_counter()
                    await asyncio.gather(
                        *(
                            submit(js, f"s{replicas}-{i}", f"Problem {i}: add {i} and {i}.", params)
                            for i in range(args.sessions)
                        )
                    )
                    await asyncio.sleep(max(0.0, started + args.warmup - time.perf_counter()))
                    calls_before = [await simulator_calls(http, u) for u in urls]
                    cpu_before = procs.cpu_seconds()
                    window_start = time.perf_counter()
                    window_end = window_start + args.window
                    while (now := time.perf_counter()) < window_end:
                        await asyncio.sleep(min(0.25, window_end - now))
                        in_window = len(seen) - bisect.bisect_left(seen, window_start)
                        status.update(
                            done_before + (time.perf_counter() - window_start),
                            f"{replicas} replica(s): {in_window} steps in the window",
                        )
                    calls = [
                        await simulator_calls(http, u) - b for u, b in zip(urls, calls_before, strict=True)
                    ]
                    cpu = {k: v - cpu_before.get(k, 0.0) for k, v in procs.cpu_seconds().items()}
            finally:
                await nc.close()
                procs.stop_all()  # before the NATS server goes
    steps = bisect.bisect_left(seen, window_end) - bisect.bisect_left(seen, window_start)
    throughput = steps / args.window
    return {
        "replicas": replicas,
        "steps_in_window": steps,
        "steps_per_s": throughput,
        "ideal_steps_per_s": replicas * 1000.0 / STEP_MS,
        "efficiency": throughput / (replicas * 1000.0 / STEP_MS),
        "backend_calls_per_replica": calls,
        "cpu_cores_by_process": {k: round(v / args.window, 2) for k, v in cpu.items()},
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    order = [list(args.replicas) if r % 2 == 0 else list(reversed(args.replicas)) for r in range(args.rounds)]
    runs: list[dict[str, Any]] = []
    total = sum(len(o) for o in order) * args.window
    with Status("measuring windows (s)", total) as status:
        for r, replicas_order in enumerate(order):
            for n in replicas_order:
                run = await run_level(n, args, status, len(runs) * args.window)
                run["round"] = r + 1
                runs.append(run)
    levels = []
    for n in args.replicas:
        mine = [x for x in runs if x["replicas"] == n]
        levels.append(
            {
                "replicas": n,
                "steps_per_s": statistics.mean(x["steps_per_s"] for x in mine),
                "steps_per_s_by_round": [x["steps_per_s"] for x in mine],
                "ideal_steps_per_s": n * 1000.0 / STEP_MS,
            }
        )
    base = levels[0]["steps_per_s"] if levels and levels[0]["replicas"] == 1 else float("nan")
    for lv in levels:
        lv["ratio_to_1"] = lv["steps_per_s"] / base if base > 0 else float("nan")
        lv["efficiency"] = lv["steps_per_s"] / lv["ideal_steps_per_s"]
    at4 = next((lv["ratio_to_1"] for lv in levels if lv["replicas"] == 4), float("nan"))
    return {
        "settings": {
            "simulator_per_replica": SIM,
            "step_ms": STEP_MS,
            "worker_concurrency": 1,
            "sessions": args.sessions,
            "warmup_s": args.warmup,
            "window_s": args.window,
            "rounds": args.rounds,
            "replicas": list(args.replicas),
            "services": "fresh nats-server (file storage), orchestrator and trigger-evaluator "
            "(1 process each), N srm-worker processes, one single-slot simulator server per worker, "
            "per level",
        },
        "levels": levels,
        "runs": runs,
        "targets": {
            "ratio_at_4": {
                "target": TARGET_RATIO_AT_4,
                "measured": at4,
                "met": bool(at4 >= TARGET_RATIO_AT_4),
            }
        },
    }


def report(doc: dict[str, Any]) -> None:
    s = doc["settings"]
    table = Table(
        title=f"SRM-worker scaling: {s['step_ms']:g} ms per step, 1 step at a time per replica, "
        f"{s['sessions']} sessions"
    )
    for col in ("replicas", "steps/s", "by round", "ideal", "efficiency", "ratio to 1 replica"):
        table.add_column(col, justify="right")
    for lv in doc["levels"]:
        table.add_row(
            str(lv["replicas"]),
            f"{lv['steps_per_s']:.1f}",
            ", ".join(f"{x:.1f}" for x in lv["steps_per_s_by_round"]),
            f"{lv['ideal_steps_per_s']:.0f}",
            f"{lv['efficiency']:.1%}",
            f"{lv['ratio_to_1']:.2f}x",
        )
    console.print(table)
    for run in doc["runs"]:
        console.print(
            f"  round {run['round']}, {run['replicas']} replica(s): backend calls per replica in the window "
            f"{run['backend_calls_per_replica']}"
        )
    t = doc["targets"]["ratio_at_4"]
    console.print(
        f"throughput ratio at 4 replicas {t['measured']:.2f}x "
        f"(target >= {TARGET_RATIO_AT_4:g}x): {met(t['met'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, 6 s windows")
    parser.add_argument("--replicas", default="1,2,4", help="SRM worker replicas per level")
    parser.add_argument("--sessions", type=int, default=64, help="concurrent sessions (64)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the window (3; 2)")
    parser.add_argument("--window", type=float, default=None, help="measured seconds per level (10; 6)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds, alternating the order (2; 1)")
    args = parser.parse_args()
    args.replicas = [int(x) for x in args.replicas.split(",") if x.strip()]
    args.warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 3.0)
    args.window = args.window or (6.0 if args.quick else 10.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    run_benchmark(NAME, measure, report, args, measured=measured)


def measured(doc: dict[str, Any]) -> dict[str, object]:
    out: dict[str, object] = {
        f"steps/s, round {run['round']}, {run['replicas']} replica(s)": run["steps_per_s"]
        for run in doc["runs"]
    }
    if {1, 4} <= set(doc["settings"]["replicas"]):
        out["ratio at 4 replicas"] = doc["targets"]["ratio_at_4"]["measured"]
    return out


if __name__ == "__main__":
    main()
