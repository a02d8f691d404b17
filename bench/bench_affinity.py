"""Prefix-cache affinity against round-robin: identical sessions on the same cluster, side by side.

The whole cluster runs as processes (NATS, orchestrator, trigger-evaluator, two SRM workers and two LRM
workers), in front of two ``tgi-cpu`` replicas per role. Each replica keeps a few sessions' prefixes in
its K/V cache (``--cache-slots``), fewer than the sessions running at once: the regime of a production
server whose cache memory holds its share of the sessions but not all of them.

Both modes do identical work. Greedy decoding over a shared, evicting cache is not bit-exact (a near-tie
flips once a prefix was evicted and read again), so left alone a session takes other steps in each run
and the totals compare different work. So the sessions are first *recorded* (one unmeasured run), then
*replayed* in every measured run: a small proxy in front of each replica (in this process) looks up each
``/generate`` request's prompt in the recording and adds the recorded token ids as ``forced_tokens``
(tgi-cpu decodes and scores them instead of choosing: the same prompts, the same step texts, the same
tokens prefilled and decoded). The policy is the matched random baseline (``random``, ``offload_p``
0.25, drawn from the seed), whose SRM/LRM choices depend on the seed alone, not on a logprob that may
differ in its last bit between cache states. The benchmark checks that every run's steps (index, role,
text, per session) equal the recording's, and exits 1 if they do not.

``--rounds`` rounds (3; ``--quick`` 1) in alternating order, each on freshly started replicas (cold
caches); medians, spread (min-max over rounds) and per-round paired ratios. A last run, with affinity,
kills one SRM replica (SIGKILL) a third of the way through: every session must still finish.

Measured per run, from the replicas' own /metrics and the sessions' events: prompt tokens, cached prompt
tokens, prefill seconds, step p50 (the worker's backend call) and session wall p50. Writes
bench/results/affinity.json (``--quick``: bench/results/quick/affinity.json).

    uv run --frozen --no-sync python bench/bench_affinity.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
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
    exit_if_empty,
    met,
    percentiles,
    run_benchmark,
    service_env,
    session_params,
    start_service,
    submit,
)
from aiohttp import web
from nats.aio.msg import Msg
from rich.table import Table

from trigreason.eval import load_problems
from trigreason.nats_server import LocalNatsServer
from trigreason.proto import StepGenerated, TypedDecoder, event_filter
from trigreason.services.runtime import BusSettings, ensure_topology

NAME = "affinity"
TARGETS = {"cached_prompt_share": 0.8, "prefill_ratio": 0.5, "session_wall_ratio": 0.8}
OFFLOAD_P = 0.25  # share of SRM steps the random policy hands to the LRM (drawn from the seed)
# Response headers the proxy passes back (the worker reads TGI's x-* headers and the content type).
_PASS_HEADERS = ("content-type",)


class Recording:
    """The recorded generations, by (role, prompt): the token ids each ``/generate`` answered. In record
    mode the proxies fill it; in replay mode they force each recorded answer and count the misses."""

    def __init__(self) -> None:
        self.tokens: dict[tuple[str, str], list[int]] = {}
        self.recording = True
        self.forced = 0
        self.misses = 0

    def replay(self) -> None:
        self.recording = False
        self.forced = self.misses = 0


class ReplayProxy:
    """An HTTP proxy in front of one tgi-cpu replica: passes every request on; in record mode notes the
    token ids of each ``/generate`` answer, in replay mode adds the recorded ids to the request as
    ``parameters.forced_tokens``. A replica that is gone is answered 502 (as a load balancer would)."""

    def __init__(self, role: str, target: str, recording: Recording) -> None:
        self.role = role
        self.target = target
        self.recording = recording
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        body = await request.read()
        key: tuple[str, str] | None = None
        if request.method == "POST" and request.path == "/generate":
            doc = json.loads(body)
            key = (self.role, doc["inputs"])
            if not self.recording.recording:
                forced = self.recording.tokens.get(key)
                if forced is None:
                    self.recording.misses += 1
                else:
                    self.recording.forced += 1
                    doc.setdefault("parameters", {})["forced_tokens"] = forced
                    body = json.dumps(doc).encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "traceparent")}
        try:
            async with self._http.request(
                request.method, self.target + request.path_qs, data=body or None, headers=headers
            ) as resp:
                data = await resp.read()
                status = resp.status
                out_headers = {
                    k: v for k, v in resp.headers.items() if k.lower() in _PASS_HEADERS or k.startswith("x-")
                }
        except (aiohttp.ClientError, OSError) as exc:
            return web.json_response({"error": f"replica gone: {exc}", "error_type": "proxy"}, status=502)
        if key is not None and self.recording.recording and status == 200:
            ids = [t["id"] for t in json.loads(data)["details"]["tokens"]]
            self.recording.tokens.setdefault(key, ids)
        return web.Response(body=data, status=status, headers=out_headers)


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
    mode: str,
    args: argparse.Namespace,
    status: Status,
    done_before: int,
    recording: Recording,
    *,
    kill: bool = False,
) -> dict[str, Any]:
    """One run of every session with ``mode`` routing, on fresh replicas, recording or replaying
    (``recording.recording``); with ``kill``, one SRM replica is killed a third of the way through."""
    params = session_params(
        policy="random",
        offload_p=OFFLOAD_P,
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
            # The workers reach each replica through its proxy (recording, or forcing the recorded tokens).
            proxies = [ReplayProxy(role, url, recording) for role in ("srm", "lrm") for url in replicas[role]]
            proxied: dict[str, list[str]] = {"srm": [], "lrm": []}
            for proxy in proxies:
                proxied[proxy.role].append(await proxy.start())
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
                        srm_url=",".join(proxied["srm"]),
                        lrm_url=",".join(proxied["lrm"]),
                        concurrency=args.worker_concurrency,
                    ) | {
                        "TRIGREASON_BACKEND_ROUTING": mode,
                        "TRIGREASON_BACKEND_PROBE_INTERVAL_S": "1",
                        "TRIGREASON_METRICS_PORT": str(port),
                    }
                    start_service(procs, label, f"{role}-worker", env)
                    labels.append(label)
                    worker_metrics.append(f"http://127.0.0.1:{port}")
            await procs.wait_log(labels, "consuming")
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
                for proxy in proxies:
                    await proxy.close()
    run = _summarise(mode, kill, killed, ids, wall, failed, steps, server_counts, worker_counts)
    run["trajectories"] = _trajectories(ids, steps)
    run["forced_requests"], run["unrecorded_requests"] = recording.forced, recording.misses
    return run


def _trajectories(ids: list[str], steps: list[StepGenerated]) -> list[list[list[Any]]]:
    """Per session (in question order) its generated steps as [step index, role, text], one per command
    (a redelivered result counted once): what must be identical in every run."""
    index = {sid: i for i, sid in enumerate(ids)}
    seen: dict[str, StepGenerated] = {}
    for s in steps:
        seen.setdefault(s.command_id, s)
    out: list[list[list[Any]]] = [[] for _ in ids]
    for s in sorted(seen.values(), key=lambda s: (s.step_index, s.role, s.attempt)):
        out[index[s.session_id]].append([s.step_index, s.role, s.step.text])
    return out


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
        "generated_tokens": int(_sum(servers, "trigreason_tgi_cpu_generated_tokens_total")),
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


_FIGURES = (
    "prompt_tokens",
    "cached_prompt_tokens",
    "generated_tokens",
    "cached_prompt_share",
    "prefill_seconds",
    "decode_seconds",
    "step_p50_ms",
    "session_wall_p50_s",
    "steps",
    "affinity_hit_ratio",
    "prefill_ms_per_prompt_token",
    "uncached_tokens_per_step",
    "session_wall_per_step_p50_s",
)
# Ratio affinity / round-robin of each: (name, figure).
_RATIOS = (
    ("prefill_seconds", "prefill_seconds"),
    ("session_wall_p50", "session_wall_p50_s"),
    ("step_p50", "step_p50_ms"),
    ("prefill_per_prompt_token", "prefill_ms_per_prompt_token"),
    ("session_wall_per_step_p50", "session_wall_per_step_p50_s"),
)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    order = [
        ("round-robin", "affinity") if r % 2 == 0 else ("affinity", "round-robin") for r in range(args.rounds)
    ]
    runs: list[dict[str, Any]] = []
    recording = Recording()
    total = args.sessions * (1 + 2 * args.rounds + (0 if args.no_failure_run else 1))
    with Status("record, then affinity vs round-robin", total=total) as status:
        # The recording run: greedy decoding as it falls; not measured.
        recorded = await run_mode("round-robin", args, status, 0, recording)
        for r, pair in enumerate(order):
            for mode in pair:
                recording.replay()
                run = await run_mode(mode, args, status, (1 + len(runs)) * args.sessions, recording)
                run["round"] = r
                runs.append(run)
        failure = None
        if not args.no_failure_run:
            recording.replay()
            done = (1 + len(runs)) * args.sessions
            failure = await run_mode("affinity", args, status, done, recording, kill=True)
    settings = {
        "sessions": args.sessions,
        "model": args.model,
        "policy": f"random (offload_p {OFFLOAD_P}, seed 7), 2 LRM priming steps, temperature 0",
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
        "recorded_generations": len(recording.tokens),
    }
    return aggregate(runs, failure, settings, recorded)


def _normalised(run: dict[str, Any]) -> dict[str, float]:
    """Per-work figures of a run (the work is the same in every run, so these follow the totals)."""
    return {
        "prefill_ms_per_prompt_token": 1000 * run["prefill_seconds"] / max(1, run["prompt_tokens"]),
        "uncached_tokens_per_step": (run["prompt_tokens"] - run["cached_prompt_tokens"])
        / max(1, run["steps"]),
    }


def _target(measured: float, target: float, *, at_most: bool) -> dict[str, Any]:
    return {
        "measured": measured,
        "target": target,
        "met": measured <= target if at_most else measured >= target,
    }


def _identical(run: dict[str, Any], recorded: dict[str, Any]) -> bool:
    return bool(run["trajectories"] == recorded["trajectories"] and run["unrecorded_requests"] == 0)


def aggregate(
    runs: list[dict[str, Any]],
    failure: dict[str, Any] | None,
    settings: dict[str, Any],
    recorded: dict[str, Any],
) -> dict[str, Any]:
    """Medians and spread per mode, the ratios affinity / round-robin (of the medians, and per round),
    the identical-work check and the targets."""
    for run in [*runs, *([failure] if failure else [])]:
        run.update(_normalised(run))
        run["identical_to_recording"] = _identical(run, recorded)
    modes: dict[str, dict[str, Any]] = {}
    spread: dict[str, dict[str, list[float]]] = {}
    for mode in ("affinity", "round-robin"):
        rs = [r for r in runs if r["mode"] == mode]
        values = {key: [float(r[key]) for r in rs if r[key] is not None] for key in _FIGURES}
        modes[mode] = {key: statistics.median(v) if v else math.nan for key, v in values.items()}
        spread[mode] = {key: [min(v), max(v)] if v else [] for key, v in values.items()}
    a, rr = modes["affinity"], modes["round-robin"]
    ratios = {name: a[key] / rr[key] if rr[key] else math.nan for name, key in _RATIOS}
    by_round: dict[str, list[float]] = {name: [] for name, _ in _RATIOS}
    for r in sorted({run["round"] for run in runs}):
        pair = {run["mode"]: run for run in runs if run["round"] == r}
        if len(pair) == 2:
            for name, key in _RATIOS:
                by_round[name].append(pair["affinity"][key] / pair["round-robin"][key])
    identical = all(run["identical_to_recording"] for run in runs)
    same_tokens = len({(r["prompt_tokens"], r["generated_tokens"], r["steps"]) for r in runs}) == 1
    return {
        "settings": settings,
        "modes": modes,
        "spread": spread,
        "ratios": ratios,
        "ratios_by_round": by_round,
        "identical_work": {
            "met": identical,
            "same_token_totals": same_tokens,
            "recorded_steps": sum(len(t) for t in recorded["trajectories"]),
            "runs": [
                {
                    "mode": r["mode"],
                    "round": r["round"],
                    "identical": r["identical_to_recording"],
                    "forced_requests": r["forced_requests"],
                    "unrecorded_requests": r["unrecorded_requests"],
                    "prompt_tokens": r["prompt_tokens"],
                    "generated_tokens": r["generated_tokens"],
                    "steps": r["steps"],
                }
                for r in runs
            ],
        },
        "targets": {
            "cached_prompt_share": _target(
                a["cached_prompt_share"], TARGETS["cached_prompt_share"], at_most=False
            ),
            "prefill_ratio": _target(ratios["prefill_seconds"], TARGETS["prefill_ratio"], at_most=True),
            "session_wall_ratio": _target(
                ratios["session_wall_p50"], TARGETS["session_wall_ratio"], at_most=True
            ),
            "failure_run_loses_no_session": (
                None
                if failure is None
                else {"met": failure["sessions_failed"] == 0 and failure["sessions"] == settings["sessions"]}
            ),
        },
        "failure_run": failure,
        "recording_run": recorded,
        "runs": runs,
    }


def _spread(doc: dict[str, Any], mode: str, key: str, fmt: str) -> str:
    lo_hi = doc["spread"][mode][key]
    if not lo_hi or lo_hi[0] == lo_hi[1]:
        return fmt.format(doc["modes"][mode][key])
    return f"{fmt.format(doc['modes'][mode][key])} ({fmt.format(lo_hi[0])}-{fmt.format(lo_hi[1])})"


def report(doc: dict[str, Any]) -> None:
    s = doc["settings"]
    table = Table(
        title=f"{s['sessions']} sessions replayed identically, 2 tgi-cpu replicas per role ({s['model']}, "
        f"{s['cache_slots']} cache slots each), 2 workers per role; median (min-max) of "
        f"{s['rounds']} round(s)"
    )
    rows = (
        ("prompt tokens", "prompt_tokens", "{:.0f}", None),
        ("cached prompt tokens", "cached_prompt_tokens", "{:.0f}", None),
        ("cached prompt share", "cached_prompt_share", "{:.2f}", None),
        ("generated tokens", "generated_tokens", "{:.0f}", None),
        ("steps", "steps", "{:.0f}", None),
        ("prefill s", "prefill_seconds", "{:.1f}", "prefill_seconds"),
        ("prefill ms / prompt token", "prefill_ms_per_prompt_token", "{:.2f}", "prefill_per_prompt_token"),
        ("step p50 ms", "step_p50_ms", "{:.0f}", "step_p50"),
        ("session wall p50 s", "session_wall_p50_s", "{:.1f}", "session_wall_p50"),
        ("session wall / step p50 s", "session_wall_per_step_p50_s", "{:.2f}", "session_wall_per_step_p50"),
        ("affinity hits", "affinity_hit_ratio", "{:.2f}", None),
    )
    table.add_column("figure")
    table.add_column("round-robin", justify="right")
    table.add_column("affinity", justify="right")
    table.add_column("affinity / round-robin (by round)", justify="right")
    for label, key, fmt, ratio_name in rows:
        ratio = ""
        if ratio_name is not None:
            rounds = ", ".join(f"{x:.2f}" for x in doc["ratios_by_round"][ratio_name])
            ratio = f"{doc['ratios'][ratio_name]:.2f}x ({rounds})"
        table.add_row(label, _spread(doc, "round-robin", key, fmt), _spread(doc, "affinity", key, fmt), ratio)
    console.print(table)
    w = doc["identical_work"]
    console.print(
        f"identical work: every run's {w['recorded_steps']} steps (index, role, text per session) equal "
        f"the recording's: {met(w['met'])}; the same prompt, generated token and step totals in every run: "
        f"{'yes' if w['same_token_totals'] else 'no'}"
    )
    for run in w["runs"]:
        if not run["identical"]:
            console.print(
                f"  [red]round {run['round']} {run['mode']}: steps differ from the recording "
                f"({run['unrecorded_requests']} requests not in the recording)[/]"
            )
    t = doc["targets"]
    for key, what, fmt in (
        ("cached_prompt_share", "cached prompt share with affinity", "{:.2f} (>= 0.8)"),
        ("prefill_ratio", "prefill seconds, affinity / round-robin", "{:.2f}x (<= 0.5x)"),
        ("session_wall_ratio", "session wall p50, affinity / round-robin", "{:.2f}x (<= 0.8x)"),
    ):
        console.print(f"{what} {fmt.format(t[key]['measured'])}: {met(t[key]['met'])}")
    f = doc["failure_run"]
    if f is not None:
        console.print(
            f"failure run ({f['killed']} killed after a third of the steps): "
            f"{f['sessions'] - f['sessions_failed']}/{f['sessions']} sessions finished, "
            f"{f['rerouted_steps']} steps rerouted "
            f"({f['reroutes']}), steps as recorded: {f['identical_to_recording']}: "
            f"{met(doc['targets']['failure_run_loses_no_session']['met'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter sessions, one round")
    parser.add_argument("--sessions", type=int, default=None, help="sessions at once (8; quick 4)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="committed tokens per session (512; quick 192)"
    )
    parser.add_argument("--step-tokens", type=int, default=48, help="tokens per step at most (48)")
    parser.add_argument("--cache-slots", type=int, default=None, help="sessions each replica caches (4)")
    parser.add_argument("--ctx", type=int, default=8192, help="each replica's context, shared by its slots")
    parser.add_argument("--model", default="tiny", help="the model of every replica (tiny)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds, alternating the order (3; quick 1)")
    parser.add_argument("--worker-concurrency", type=int, default=8, help="steps in flight per worker (8)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run at most")
    parser.add_argument("--no-failure-run", action="store_true", help="skip the run that kills a replica")
    parser.add_argument("--from-json", help="measure nothing: aggregate the runs of an earlier results file")
    args = parser.parse_args()
    args.sessions = args.sessions or (4 if args.quick else 8)
    args.max_tokens = args.max_tokens or (192 if args.quick else 512)
    args.cache_slots = args.cache_slots or 4
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.from_json:  # aggregate the runs of an earlier results file again (measures nothing)
        path = Path(args.from_json)
        old = json.loads(path.read_text())
        doc = old | aggregate(old["runs"], old["failure_run"], old["settings"], old["recording_run"])
        report(doc)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"wrote {path}")
        exit_if_empty(measured(doc))
        return
    # --quick writes its own file (bench/results/quick/): short sessions are a smoke test.
    run_benchmark(NAME, measure, report, args, measured=measured)


def measured(doc: dict[str, Any]) -> dict[str, object]:
    out: dict[str, object] = {}
    for mode, m in doc["modes"].items():
        for key in ("steps", "prompt_tokens", "generated_tokens", "prefill_seconds", "session_wall_p50_s"):
            out[f"{mode}: {key}"] = m[key]
    out.update({f"ratio {k}": v for k, v in doc["ratios"].items()})
    # Different work in the two modes makes every ratio meaningless: as empty as no measurement.
    out["identical work in every run (1 = yes)"] = 1 if doc["identical_work"]["met"] else 0
    return out


if __name__ == "__main__":
    main()
