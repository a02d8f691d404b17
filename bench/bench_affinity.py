"""Prefix-cache affinity against round-robin: the same sessions on the same cluster, side by side.

The whole cluster runs as processes (NATS, orchestrator, trigger-evaluator, two SRM workers and two LRM
workers), in front of two ``tgi-cpu`` replicas per role. Each replica keeps a few sessions' prefixes in
its K/V cache (``--cache-slots``), fewer than the sessions running at once: the regime of a production
server whose cache memory holds its share of the sessions but not all of them. The same sessions (greedy,
so the same tokens) run once with ``TRIGREASON_BACKEND_ROUTING=round-robin`` and once with ``affinity``,
each on freshly started replicas (cold caches), in alternating order over ``--rounds``. A third run kills
one SRM replica (SIGKILL) a third of the way through, with affinity: every session must still finish.

Measured per mode, from the replicas' own /metrics and the session's events: prompt tokens, cached
prompt tokens, prefill seconds, step p50 (the worker's backend call) and session wall p50. Writes
bench/results/affinity.json (``--quick``: affinity-quick.json).

    uv run --frozen --no-sync python bench/bench_affinity.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
from _harness import (
    Processes,
    Status,
    console,
    met,
    percentiles,
    run_benchmark,
    service_env,
    session_params,
    start_service,
    submit,
)
from nats.aio.msg import Msg
from rich.table import Table

from trigreason.eval import load_problems
from trigreason.nats_server import LocalNatsServer
from trigreason.proto import StepGenerated, TypedDecoder, event_filter
from trigreason.services.runtime import BusSettings, ensure_topology

NAME = "affinity"
TARGETS = {"cached_prompt_share": 0.8, "prefill_ratio": 0.5, "session_wall_ratio": 0.8}
_METRIC = re.compile(r"^(trigreason_[a-z_]+?)(?:\{([^}]*)\})? ([0-9.e+-]+)$", re.M)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """A Prometheus text page as ``{name{labels}: value}`` (trigreason_* series only)."""
    async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        text = await resp.text()
    return {f"{m[1]}{{{m[2] or ''}}}": float(m[3]) for m in _METRIC.finditer(text)}


async def _wait_healthy(
    http: aiohttp.ClientSession, urls: list[str], procs: Processes, timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    for url in urls:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        break
            for label, proc in procs.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{label} exited:\n{procs.log(label)[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not healthy after {timeout_s:.0f} s")
            await asyncio.sleep(0.2)


def _questions(n: int) -> list[str]:
    return [p.question for p in load_problems("gsm8k", limit=n)]


async def run_mode(
    mode: str, args: argparse.Namespace, status: Status, done_before: int, *, kill: bool = False
) -> dict[str, Any]:
    """One run of every session with ``mode`` routing, on fresh replicas; with ``kill``, one SRM replica
    is killed a third of the way through."""
    params = session_params(
        policy="trigreason",
        temperature=0.0,
        max_tokens=args.max_tokens,
        step_max_tokens=args.step_tokens,
        priming_steps=2,
        seed=7,
    )
    questions = _questions(args.sessions)
    expected_steps = args.sessions * args.max_tokens / (args.step_tokens * 0.6)  # for the kill point only
    ended: dict[str, float] = {}
    failed: list[str] = []
    steps: list[StepGenerated] = []
    decoder: TypedDecoder[StepGenerated] = TypedDecoder(StepGenerated)

    async def on_step(msg: Msg) -> None:
        steps.append(decoder.decode(msg.data))

    async def on_end(msg: Msg) -> None:
        sid = msg.subject.split(".")[2]
        ended.setdefault(sid, time.perf_counter())
        if msg.subject.endswith(".failed"):
            failed.append(sid)

    with Processes() as procs:
        async with LocalNatsServer() as server, aiohttp.ClientSession() as http:
            replicas: dict[str, list[str]] = {"srm": [], "lrm": []}
            for role in ("srm", "lrm"):
                for r in range(2):
                    port = _free_port()
                    procs.start(
                        f"tgi-{role}-{r}",
                        [sys.executable, "-m", "trigreason.services.tgi_cpu"],
                        env=service_env(server.url)
                        | {
                            "TRIGREASON_TGI_CPU_MODEL": args.model,
                            "TRIGREASON_TGI_CPU_PORT": str(port),
                            "TRIGREASON_TGI_CPU_THREADS": "1",
                            "TRIGREASON_TGI_CPU_CTX": str(args.ctx),
                            "TRIGREASON_TGI_CPU_CACHE_SLOTS": str(args.cache_slots),
                            "TRIGREASON_TGI_CPU_MAX_QUEUE": "64",
                        },
                    )
                    replicas[role].append(f"http://127.0.0.1:{port}")
            all_replicas = replicas["srm"] + replicas["lrm"]
            await _wait_healthy(http, all_replicas, procs)
            labels = ["orchestrator", "trigger-evaluator"]
            for name in labels:
                start_service(procs, name, name, service_env(server.url))
            worker_metrics: list[str] = []
            for role in ("srm", "lrm"):
                for w in range(2):
                    label = f"{role}-worker-{w}"
                    port = _free_port()
                    env = service_env(
                        server.url,
                        srm_url=",".join(replicas["srm"]),
                        lrm_url=",".join(replicas["lrm"]),
                        concurrency=args.worker_concurrency,
                    ) | {
                        "TRIGREASON_BACKEND_ROUTING": mode,
                        "TRIGREASON_BACKEND_PROBE_INTERVAL_S": "1",
                        "TRIGREASON_METRICS_PORT": str(port),
                    }
                    start_service(procs, label, f"{role}-worker", env)
                    labels.append(label)
                    worker_metrics.append(f"http://127.0.0.1:{port}")
            await procs.wait_log(labels, "consuming", timeout_s=60)
            nc = await nats.connect(server.url)
            server_counts: dict[str, dict[str, float]] = {}
            worker_counts: dict[str, dict[str, float]] = {}
            killed: str | None = None
            try:
                js = nc.jetstream()
                await ensure_topology(js, BusSettings(nats_url=server.url))
                await nc.subscribe(event_filter("srm_step"), cb=on_step)
                await nc.subscribe(event_filter("lrm_step"), cb=on_step)
                await nc.subscribe(event_filter("finished"), cb=on_end)
                await nc.subscribe(event_filter("failed"), cb=on_end)
                ids = [f"{mode}-{i}" for i in range(args.sessions)]
                started = time.perf_counter()
                await asyncio.gather(
                    *(submit(js, sid, q, params) for sid, q in zip(ids, questions, strict=True))
                )
                last_scrape = 0.0
                while len(ended) < len(ids):
                    if time.perf_counter() - started > args.timeout:
                        raise RuntimeError(
                            f"{mode}: {len(ids) - len(ended)} sessions unfinished after {args.timeout} s"
                        )
                    if kill and killed is None and len(steps) >= expected_steps / 3:
                        killed = "tgi-srm-0"
                        procs.procs[killed].kill()
                    if time.perf_counter() - last_scrape > 1.0:  # a killed replica's counts are kept
                        last_scrape = time.perf_counter()
                        for url in all_replicas:
                            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                                server_counts[url] = await _scrape(http, url)
                    status.update(
                        done_before + len(ended),
                        f"{mode}{' + kill' if kill else ''}: {len(ended)}/{len(ids)} sessions, "
                        f"{len(steps)} steps",
                    )
                    await asyncio.sleep(0.2)
                wall = [ended[sid] - started for sid in ids]
                for url in all_replicas:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        server_counts[url] = await _scrape(http, url)
                for url in worker_metrics:
                    worker_counts[url] = await _scrape(http, url)
            finally:
                await nc.close()
                procs.stop_all()
    return _summarise(mode, kill, killed, ids, wall, failed, steps, server_counts, worker_counts)


def _sum(counts: dict[str, dict[str, float]], name: str, where: str = "") -> float:
    return sum(v for c in counts.values() for k, v in c.items() if k.startswith(name + "{") and where in k)


def _summarise(
    mode: str,
    kill: bool,
    killed: str | None,
    ids: list[str],
    wall: list[float],
    failed: list[str],
    steps: list[StepGenerated],
    servers: dict[str, dict[str, float]],
    workers: dict[str, dict[str, float]],
) -> dict[str, Any]:
    per_session = collections.Counter(s.session_id for s in steps)
    prompt = _sum(servers, "trigreason_tgi_cpu_prompt_tokens_total")
    cached = _sum(servers, "trigreason_tgi_cpu_cached_prompt_tokens_total")
    reroutes = {
        reason: int(_sum(workers, "trigreason_backend_reroutes_total", f'reason="{reason}"'))
        for reason in ("failed", "ejected", "overloaded", "saturated")
    }
    hits = _sum(workers, "trigreason_backend_affinity_total", 'result="hit"')
    misses = _sum(workers, "trigreason_backend_affinity_total", 'result="miss"')
    return {
        "mode": mode,
        "kill": kill,
        "killed": killed,
        "sessions": len(wall),
        "sessions_failed": len(failed),
        "steps": len(steps),
        "prompt_tokens": int(prompt),
        "cached_prompt_tokens": int(cached),
        "cached_prompt_share": cached / prompt if prompt else 0.0,
        "prefill_seconds": _sum(servers, "trigreason_tgi_cpu_prefill_seconds_sum"),
        "decode_seconds": _sum(servers, "trigreason_tgi_cpu_decode_seconds_sum"),
        "step_p50_ms": statistics.median(s.timings.backend_s for s in steps) * 1000 if steps else None,
        "step_ms": percentiles([s.timings.backend_s for s in steps], 1000.0),
        "session_wall_p50_s": statistics.median(wall),
        "session_wall_per_step_p50_s": statistics.median(
            w / max(1, per_session[sid]) for sid, w in zip(ids, wall, strict=True)
        ),
        "session_wall_s": percentiles(wall),
        "affinity_hit_ratio": hits / (hits + misses) if hits + misses else None,
        "reroutes": reroutes,
        "rerouted_steps": sum(reroutes[r] for r in ("failed", "ejected")),
        "per_replica_prompt_tokens": {
            url: int(c.get("trigreason_tgi_cpu_prompt_tokens_total{}", 0)) for url, c in servers.items()
        },
    }


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    order = [
        ("round-robin", "affinity") if r % 2 == 0 else ("affinity", "round-robin") for r in range(args.rounds)
    ]
    runs: list[dict[str, Any]] = []
    total = args.sessions * (2 * args.rounds + (0 if args.no_failure_run else 1))
    with Status("affinity vs round-robin", total=total) as status:
        for r, pair in enumerate(order):
            for mode in pair:
                run = await run_mode(mode, args, status, len(runs) * args.sessions)
                run["round"] = r
                runs.append(run)
        failure = None
        if not args.no_failure_run:
            failure = await run_mode("affinity", args, status, len(runs) * args.sessions, kill=True)
    settings = {
        "sessions": args.sessions,
        "model": args.model,
        "max_tokens": args.max_tokens,
        "step_tokens": args.step_tokens,
        "cache_slots": args.cache_slots,
        "ctx": args.ctx,
        "rounds": args.rounds,
        "quick": args.quick,
        "replicas_per_role": 2,
        "workers_per_role": 2,
        "worker_concurrency": args.worker_concurrency,
        "tgi_cpu_threads": 1,
    }
    return aggregate(runs, failure, settings)


def _normalised(run: dict[str, Any]) -> dict[str, float]:
    """Per-work figures of a run. The sessions are the same in every run, but their trajectories are not:
    greedy decoding on a cache shared by several sequences is not bit-exact (a near-tie may flip once a
    prefix was evicted and re-read), so a session may take other steps, and totals compare different work."""
    steps_per_session = run["steps"] / run["sessions"]
    wall_per_step = run.get("session_wall_per_step_p50_s")
    return {
        "prefill_ms_per_prompt_token": 1000 * run["prefill_seconds"] / run["prompt_tokens"],
        "uncached_tokens_per_step": (run["prompt_tokens"] - run["cached_prompt_tokens"]) / run["steps"],
        # Runs recorded before per-session step counts: the run's median wall over its mean steps per session.
        "session_wall_per_step_p50_s": (
            wall_per_step if wall_per_step is not None else run["session_wall_p50_s"] / steps_per_session
        ),
    }


def _target(measured: float, target: float, *, at_most: bool) -> dict[str, Any]:
    return {
        "measured": measured,
        "target": target,
        "met": measured <= target if at_most else measured >= target,
    }


def aggregate(
    runs: list[dict[str, Any]], failure: dict[str, Any] | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """Medians per mode, the ratios affinity / round-robin (totals and per work done), the targets."""
    for run in [*runs, *([failure] if failure else [])]:
        run.update(_normalised(run))
    modes: dict[str, dict[str, Any]] = {}
    for mode in ("affinity", "round-robin"):
        rs = [r for r in runs if r["mode"] == mode]
        modes[mode] = {
            key: _median_of(rs, key)
            for key in (
                "prompt_tokens",
                "cached_prompt_tokens",
                "cached_prompt_share",
                "prefill_seconds",
                "step_p50_ms",
                "session_wall_p50_s",
                "steps",
                "affinity_hit_ratio",
                "prefill_ms_per_prompt_token",
                "uncached_tokens_per_step",
                "session_wall_per_step_p50_s",
            )
        }
    a, rr = modes["affinity"], modes["round-robin"]
    ratios = {
        "prefill_seconds": a["prefill_seconds"] / rr["prefill_seconds"],
        "session_wall_p50": a["session_wall_p50_s"] / rr["session_wall_p50_s"],
        "step_p50": a["step_p50_ms"] / rr["step_p50_ms"],
        "prefill_per_prompt_token": a["prefill_ms_per_prompt_token"] / rr["prefill_ms_per_prompt_token"],
        "session_wall_per_step_p50": a["session_wall_per_step_p50_s"] / rr["session_wall_per_step_p50_s"],
    }
    return {
        "settings": settings,
        "modes": modes,
        "ratios": ratios,
        # Each ratio target is checked on the totals and per work done; both must hold.
        "targets": {
            "cached_prompt_share": _target(
                a["cached_prompt_share"], TARGETS["cached_prompt_share"], at_most=False
            ),
            "prefill_ratio": _target(
                max(ratios["prefill_seconds"], ratios["prefill_per_prompt_token"]),
                TARGETS["prefill_ratio"],
                at_most=True,
            ),
            "session_wall_ratio": _target(
                max(ratios["session_wall_p50"], ratios["session_wall_per_step_p50"]),
                TARGETS["session_wall_ratio"],
                at_most=True,
            ),
            "failure_run_loses_no_session": (
                None
                if failure is None
                else {"met": failure["sessions_failed"] == 0 and failure["sessions"] == settings["sessions"]}
            ),
        },
        "failure_run": failure,
        "runs": runs,
    }


def report(doc: dict[str, Any]) -> None:
    s = doc["settings"]
    table = Table(
        title=f"{s['sessions']} sessions, 2 tgi-cpu replicas per role ({s['model']}, "
        f"{s['cache_slots']} cache slots each), 2 workers per role; medians of {s['rounds']} round(s)"
    )
    for col in (
        "mode",
        "prompt tokens",
        "cached",
        "cached share",
        "prefill s",
        "step p50 ms",
        "session wall p50 s",
        "steps",
        "prefill ms / prompt token",
        "uncached tokens / step",
        "wall / step p50 s",
        "affinity hits",
    ):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for mode, m in doc["modes"].items():
        table.add_row(
            mode,
            f"{m['prompt_tokens']:.0f}",
            f"{m['cached_prompt_tokens']:.0f}",
            f"{m['cached_prompt_share']:.2f}",
            f"{m['prefill_seconds']:.1f}",
            f"{m['step_p50_ms']:.0f}",
            f"{m['session_wall_p50_s']:.1f}",
            f"{m['steps']:.0f}",
            f"{m['prefill_ms_per_prompt_token']:.2f}",
            f"{m['uncached_tokens_per_step']:.1f}",
            f"{m['session_wall_per_step_p50_s']:.2f}",
            f"{m['affinity_hit_ratio']:.2f}",
        )
    console.print(table)
    r = doc["ratios"]
    console.print(
        f"affinity / round-robin: prefill s {r['prefill_seconds']:.2f}x (per prompt token "
        f"{r['prefill_per_prompt_token']:.2f}x), session wall p50 {r['session_wall_p50']:.2f}x (per step "
        f"{r['session_wall_per_step_p50']:.2f}x), step p50 {r['step_p50']:.2f}x"
    )
    t = doc["targets"]
    for key, what, fmt in (
        ("cached_prompt_share", "cached prompt share with affinity", "{:.2f} (>= 0.8)"),
        (
            "prefill_ratio",
            "prefill, affinity / round-robin, the worse of total and per token",
            "{:.2f}x (<= 0.5x)",
        ),
        (
            "session_wall_ratio",
            "session wall p50, affinity / round-robin, the worse of total and per step",
            "{:.2f}x (<= 0.8x)",
        ),
    ):
        console.print(f"{what} {fmt.format(t[key]['measured'])}: {met(t[key]['met'])}")
    f = doc["failure_run"]
    if f is not None:
        console.print(
            f"failure run ({f['killed']} killed after a third of the steps): "
            f"{f['sessions'] - f['sessions_failed']}/{f['sessions']} sessions finished, "
            f"{f['rerouted_steps']} steps rerouted "
            f"({f['reroutes']}): {met(doc['targets']['failure_run_loses_no_session']['met'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer, shorter sessions, one round (under 5 min)"
    )
    parser.add_argument("--sessions", type=int, default=None, help="sessions at once (8; quick 6)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="committed tokens per session (512; quick 256)"
    )
    parser.add_argument("--step-tokens", type=int, default=48, help="tokens per step at most (48)")
    parser.add_argument("--cache-slots", type=int, default=None, help="sessions each replica caches (4)")
    parser.add_argument("--ctx", type=int, default=8192, help="each replica's context, shared by its slots")
    parser.add_argument("--model", default="tiny", help="the model of every replica (tiny)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds, alternating the order (2; quick 1)")
    parser.add_argument("--worker-concurrency", type=int, default=8, help="steps in flight per worker (8)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run at most")
    parser.add_argument("--no-failure-run", action="store_true", help="skip the run that kills a replica")
    parser.add_argument("--from-json", help="measure nothing: aggregate the runs of an earlier results file")
    args = parser.parse_args()
    args.sessions = args.sessions or (6 if args.quick else 8)
    args.max_tokens = args.max_tokens or (256 if args.quick else 512)
    args.cache_slots = args.cache_slots or 4
    args.rounds = args.rounds or (1 if args.quick else 2)
    if args.from_json:  # aggregate the runs of an earlier results file again (measures nothing)
        path = Path(args.from_json)
        old = json.loads(path.read_text())
        doc = old | aggregate(old["runs"], old["failure_run"], old["settings"])
        report(doc)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"wrote {path}")
        return
    # --quick writes its own file (bench/results/quick/): short sessions are a smoke test.
    run_benchmark(NAME, measure, report, args, measured=measured)


def measured(doc: dict[str, Any]) -> dict[str, object]:
    out: dict[str, object] = {}
    for mode, m in doc["modes"].items():
        for key in ("steps", "prompt_tokens", "prefill_seconds", "session_wall_p50_s"):
            out[f"{mode}: {key}"] = m[key]
    out.update({f"ratio {k}": v for k, v in doc["ratios"].items()})
    return out


if __name__ == "__main__":
    main()
