"""Per-step orchestration overhead: the same sessions through the cluster and through the in-process runner.

Both modes run the same sessions (same questions, parameters and seeds, so the same trajectories, which
the benchmark checks) against one backend simulator (its own process, 20 ms per token by default, never
queueing). The cluster is nats-server plus the orchestrator, trigger-evaluator, SRM and LRM workers, each
its own process, as deployed; the in-process runner (``trigreason.runner.run_session``) drives the same
core in this process with no bus. Rounds alternate which mode goes first.

What is measured, per command (one backend call, i.e. one step attempt):

* cluster: an observer subscribed to ``trig.>`` stamps every message as it sees it. Overhead = time from
  a command's appearance on the bus to the next command's (or the session end's) appearance, minus the
  backend call time the worker measured around its HTTP request (``timings.backend_s``). It covers the
  JetStream hop to the worker, the worker's own work, the result's publish, the trigger-evaluator hop,
  the verdict, the orchestrator's snapshot load / ``decide`` / compare-and-set / publishes. Split into
  dispatch (command seen -> result seen, minus the backend call) and turnaround (result seen -> next
  command seen).
* in-process: the same quantity from the runner's own events (command issued -> next command issued,
  minus the backend call time of the same adapter).

And per session: the wall time (cluster: publish of ``SessionRequested`` -> ``SessionFinished`` seen;
in-process: the call to ``run_session``) and the ratio cluster / in-process over the same sessions.

    uv run --frozen python bench/bench_overhead.py [--quick] [--sessions 16] [--rounds 3]

Targets: overhead p50 <= 2 ms per step, wall ratio <= 1.05 at 20 ms/token. Writes
bench/results/overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

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
    start_simulators,
    submit,
)
from nats.aio.msg import Msg
from rich.table import Table

from trigreason.nats_server import LocalNatsServer
from trigreason.proto import (
    ALL_SUBJECTS,
    GenerateStep,
    SessionFailed,
    SessionFinished,
    SessionParams,
    StepCommitted,
    StepGenerated,
    Verdict,
    decode_message,
)
from trigreason.runner import run_session
from trigreason.services.runtime import BusSettings, ensure_topology
from trigreason.services.worker.backends import (
    Backend,
    Generation,
    GenerationRequest,
    JudgeResult,
    ScoreResult,
    make_backend,
)

NAME = "overhead"
SERVICES = ("orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker")
TARGET_OVERHEAD_MS = 2.0
TARGET_WALL_RATIO = 1.05


@dataclass
class Trace:
    """One session in one mode: when each command appeared, each call's backend time, the trajectory."""

    seed: int
    start: float = math.nan
    end: float = math.nan
    commands: list[tuple[float, str]] = field(default_factory=list)  # (seen at, command id), in order
    backend_s: dict[str, float] = field(default_factory=dict)
    generated_at: dict[str, float] = field(default_factory=dict)  # cluster: when the result appeared
    verdict_at: dict[str, float] = field(default_factory=dict)  # cluster: when its verdict appeared
    steps: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> (role, text)
    reason: str = ""

    @property
    def finished(self) -> bool:
        return math.isfinite(self.end) and self.reason != "failed"

    @property
    def wall(self) -> float:
        return self.end - self.start

    def _next(self) -> list[float]:
        return [t for t, _ in self.commands[1:]] + [self.end]

    def overhead(self) -> list[float]:
        return [
            nxt - t - self.backend_s[cid]
            for (t, cid), nxt in zip(self.commands, self._next(), strict=True)
            if cid in self.backend_s
        ]

    def dispatch(self) -> list[float]:
        return [
            self.generated_at[cid] - t - self.backend_s[cid]
            for t, cid in self.commands
            if cid in self.generated_at and cid in self.backend_s
        ]

    def turnaround(self) -> list[float]:
        return [
            nxt - self.generated_at[cid]
            for (_, cid), nxt in zip(self.commands, self._next(), strict=True)
            if cid in self.generated_at
        ]

    def evaluator(self) -> list[float]:
        return [
            self.verdict_at[cid] - self.generated_at[cid]
            for _, cid in self.commands
            if cid in self.verdict_at and cid in self.generated_at
        ]

    def orchestrator(self) -> list[float]:
        """From what the orchestrator consumes (a verdict, or an LRM step) to the next command."""
        return [
            nxt - self.verdict_at.get(cid, self.generated_at[cid])
            for (_, cid), nxt in zip(self.commands, self._next(), strict=True)
            if cid in self.generated_at
        ]

    def trajectory(self) -> list[tuple[int, str, str]]:
        return [(i, *self.steps[i]) for i in sorted(self.steps)]


class TimedBackend:
    """In-process: forwards to the shared adapter and files each call's backend time under the command
    the runner issued last (the runner has one command at a time per session)."""

    def __init__(self, inner: Backend, trace: Trace) -> None:
        self.name = inner.name
        self._inner = inner
        self._trace = trace

    async def generate(self, request: GenerationRequest) -> Generation:
        gen = await self._inner.generate(request)
        self._trace.backend_s[self._trace.commands[-1][1]] = gen.timings.backend_s
        return gen

    async def judge(
        self,
        prompt: str,
        *,
        top_n: int,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,
    ) -> JudgeResult:
        return await self._inner.judge(prompt, top_n=top_n, headers=headers)

    async def score(
        self,
        prompt: str,
        continuation: str,
        *,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,
    ) -> ScoreResult:
        read = await self._inner.score(prompt, continuation, headers=headers)
        self._trace.backend_s[self._trace.commands[-1][1]] = read.timings.backend_s
        return read

    async def aclose(self) -> None:
        return None


class Observer:
    """Stamps every message on ``trig.>`` as this process sees it; decoding waits until a round is over."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, bytes]] = []
        self.done: dict[str, asyncio.Event] = {}

    async def on_message(self, msg: Msg) -> None:
        self.seen.append((time.perf_counter(), msg.data))
        if msg.subject.endswith((".finished", ".failed")):
            event = self.done.get(msg.subject.split(".")[2])
            if event is not None:
                event.set()

    def file(self, traces: dict[str, Trace]) -> None:
        """Sort what was seen into the sessions' traces (first sighting wins: a republished outbox
        message is de-duplicated by JetStream but still visible to a plain subscriber)."""
        for t, data in self.seen:
            try:
                msg = decode_message(data)
            except Exception:
                continue
            trace = traces.get(msg.session_id)
            if trace is None:
                continue
            if isinstance(msg, GenerateStep):
                if all(cid != msg.command_id for _, cid in trace.commands):
                    trace.commands.append((t, msg.command_id))
            elif isinstance(msg, StepGenerated):
                trace.backend_s.setdefault(msg.command_id, msg.timings.backend_s)
                trace.generated_at.setdefault(msg.command_id, t)
            elif isinstance(msg, Verdict):
                trace.verdict_at.setdefault(msg.candidate.command_id, t)
            elif isinstance(msg, StepCommitted):
                trace.steps.setdefault(msg.index, (msg.role, msg.text))
            elif isinstance(msg, SessionFinished | SessionFailed) and not math.isfinite(trace.end):
                trace.end = t
                trace.reason = msg.reason if isinstance(msg, SessionFinished) else "failed"
        self.seen.clear()


def question(seed: int) -> str:
    return f"Problem {seed}: a train covers {seed + 3} km in {seed % 7 + 2} hours; what is its speed?"


def params(seed: int) -> SessionParams:
    # Two LRM priming steps, then the SRM with the default offload and intervention triggers: every
    # path of the cluster (SRM step -> verdict, LRM step, replace) is taken.
    return session_params(policy="trigreason", priming_steps=2, seed=seed, max_steps=64)


async def run_cluster_round(
    js: Any, observer: Observer, seeds: list[int], tag: str, timeout_s: float, tick: Any
) -> dict[int, Trace]:
    traces = {f"{tag}-{s}": Trace(seed=s) for s in seeds}
    for sid in traces:
        observer.done[sid] = asyncio.Event()

    async def one(sid: str) -> None:
        trace = traces[sid]
        trace.start = time.perf_counter()
        await submit(js, sid, question(trace.seed), params(trace.seed))
        await observer.done[sid].wait()
        tick()

    try:
        await asyncio.wait_for(asyncio.gather(*(one(sid) for sid in traces)), timeout_s)
    except TimeoutError:
        console.print(f"[yellow]{tag}: not all sessions finished within {timeout_s:.0f} s[/]")
    await asyncio.sleep(0.05)  # let the observer see the last events
    observer.file(traces)
    return {t.seed: t for t in traces.values()}


async def run_inprocess_round(
    srm: Backend, lrm: Backend, seeds: list[int], tag: str, timeout_s: float, tick: Any
) -> dict[int, Trace]:
    traces = {s: Trace(seed=s) for s in seeds}

    async def one(trace: Trace) -> None:
        def on_event(item: StepCommitted | Verdict | GenerateStep) -> None:
            if isinstance(item, GenerateStep):
                trace.commands.append((time.perf_counter(), item.command_id))
            elif isinstance(item, StepCommitted):
                trace.steps[item.index] = (item.role, item.text)

        trace.start = time.perf_counter()
        result = await run_session(
            question(trace.seed),
            params(trace.seed),
            srm=TimedBackend(srm, trace),
            lrm=TimedBackend(lrm, trace),
            session_id=f"{tag}-{trace.seed}",
            on_event=on_event,
        )
        trace.end = time.perf_counter()
        trace.reason = "failed" if result.failed else result.end_reason
        tick()

    try:
        await asyncio.wait_for(asyncio.gather(*(one(t) for t in traces.values())), timeout_s)
    except TimeoutError:
        console.print(f"[yellow]{tag}: not all sessions finished within {timeout_s:.0f} s[/]")
    return traces


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    sim = {
        "time_per_token_ms": args.ms_per_token,
        "prefill_ms": 5.0,
        "step_tokens": "uniform:20..60",
        "answer_after": 6,
        "answer_p": 0.5,
        "concurrency": 4096,  # never queues: the backend is the same for both modes and not the subject
        "seed": 0,
    }
    seeds = list(range(args.sessions))
    pairs: list[tuple[Trace, Trace]] = []  # (cluster, in-process) of the same session
    with Processes() as procs:
        async with LocalNatsServer() as server:
            [url] = await start_simulators(procs, [sim])
            # Workers may run as many generations at once as there are sessions, as the in-process
            # runner does: with fewer slots (the default is 8) steps would queue at the worker and the
            # figure would measure the workers' capacity, not the bus's overhead.
            slots = max(8, args.sessions)
            for name in SERVICES:
                worker = name.endswith("-worker")
                env = service_env(server.url, srm_url=url, lrm_url=url, concurrency=slots if worker else None)
                start_service(procs, name, name, env)
            await procs.wait_log(SERVICES, "consuming")
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_topology(js, BusSettings(nats_url=server.url))
            srm = await make_backend(url, name="srm")
            lrm = await make_backend(url, name="lrm")
            observer = Observer()
            await nc.subscribe(ALL_SUBJECTS, cb=observer.on_message)
            try:
                total = 2 * (args.rounds * len(seeds) + 1)
                with Status("sessions", total) as status:
                    done = 0

                    def tick() -> None:
                        nonlocal done
                        done += 1
                        status.update(done, f"round {min(r + 1, args.rounds)}/{args.rounds}")

                    r = 0
                    # Warm-up, not counted: connection pools, first-use code paths in every process.
                    await run_cluster_round(js, observer, [10_000], "warm-c", args.timeout, tick)
                    await run_inprocess_round(srm, lrm, [10_000], "warm-i", args.timeout, tick)
                    for r in range(args.rounds):
                        order = ("cluster", "inprocess") if r % 2 == 0 else ("inprocess", "cluster")
                        got: dict[str, dict[int, Trace]] = {}
                        for mode in order:
                            if mode == "cluster":
                                got[mode] = await run_cluster_round(
                                    js, observer, seeds, f"c{r}", args.timeout, tick
                                )
                            else:
                                got[mode] = await run_inprocess_round(
                                    srm, lrm, seeds, f"i{r}", args.timeout, tick
                                )
                        pairs.extend((got["cluster"][s], got["inprocess"][s]) for s in seeds)
            finally:
                await srm.aclose()
                await lrm.aclose()
                await nc.close()
                procs.stop_all()  # before the NATS server goes
    return summarise(pairs, sim, args)


def summarise(
    pairs: list[tuple[Trace, Trace]], sim: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    both = [(c, i) for c, i in pairs if c.finished and i.finished]
    mismatched = sum(1 for c, i in both if c.trajectory() != i.trajectory())
    modes: dict[str, dict[str, Any]] = {}
    for k, mode in enumerate(("cluster", "inprocess")):
        traces = [p[k] for p in both]
        modes[mode] = {
            "sessions_finished": sum(1 for p in pairs if p[k].finished),
            "sessions_run": len(pairs),
            "committed_steps": sum(len(t.steps) for t in traces),
            "commands": sum(len(t.commands) for t in traces),
            "overhead_per_command_ms": percentiles([x for t in traces for x in t.overhead()], 1000),
            "backend_per_command_ms": percentiles([x for t in traces for x in t.backend_s.values()], 1000),
            "wall_per_session_s": percentiles([t.wall for t in traces]),
            "wall_per_committed_step_ms": percentiles(
                [t.wall / len(t.steps) for t in traces if t.steps], 1000
            ),
        }
    cl = [p[0] for p in both]
    modes["cluster"]["dispatch_per_command_ms"] = percentiles([x for t in cl for x in t.dispatch()], 1000)
    modes["cluster"]["turnaround_per_command_ms"] = percentiles([x for t in cl for x in t.turnaround()], 1000)
    modes["cluster"]["evaluator_hop_ms"] = percentiles([x for t in cl for x in t.evaluator()], 1000)
    modes["cluster"]["orchestrator_hop_ms"] = percentiles([x for t in cl for x in t.orchestrator()], 1000)
    wall_c = sum(c.wall for c, _ in both)
    wall_i = sum(i.wall for _, i in both)
    ratios = [c.wall / i.wall for c, i in both if i.wall > 0]
    added = [(c.wall - i.wall) / len(c.steps) for c, i in both if c.steps]
    overhead_p50 = modes["cluster"]["overhead_per_command_ms"]["p50"]
    wall_ratio = wall_c / wall_i if wall_i > 0 else math.nan
    return {
        "settings": {
            "simulator": sim,
            "params": {"policy": "trigreason", "priming_steps": 2, "max_steps": 64, "seeds": args.sessions},
            "sessions_per_round": args.sessions,
            "worker_concurrency": max(8, args.sessions),
            "rounds": args.rounds,
            "services": "nats-server + orchestrator, trigger-evaluator, srm-worker, lrm-worker "
            "(1 process each)",
        },
        "modes": modes,
        "paired_sessions": len(both),
        "trajectories_mismatched": mismatched,
        "wall_ratio": wall_ratio,
        "wall_ratio_median_per_session": statistics.median(ratios) if ratios else math.nan,
        "added_wall_per_committed_step_ms": percentiles(added, 1000),
        "targets": {
            "overhead_p50_ms": {
                "target": TARGET_OVERHEAD_MS,
                "measured": overhead_p50,
                "met": bool(overhead_p50 <= TARGET_OVERHEAD_MS),
            },
            "wall_ratio": {
                "target": TARGET_WALL_RATIO,
                "measured": wall_ratio,
                "met": bool(wall_ratio <= TARGET_WALL_RATIO),
            },
        },
    }


def report(doc: dict[str, Any]) -> None:
    c, i = doc["modes"]["cluster"], doc["modes"]["inprocess"]
    sim = doc["settings"]["simulator"]
    table = Table(
        title="Orchestration overhead: cluster vs in-process, same sessions, "
        f"{sim['time_per_token_ms']:g} ms/token"
    )
    table.add_column("")
    table.add_column("cluster", justify="right")
    table.add_column("in-process", justify="right")
    table.add_column("cluster - in-process", justify="right")

    def row(label: str, key: str, stat: str, fmt: str = "{:.2f}") -> None:
        a, b = c[key][stat], i[key][stat]
        table.add_row(label, fmt.format(a), fmt.format(b), fmt.format(a - b))

    table.add_row(
        "sessions finished", f"{c['sessions_finished']}/{c['sessions_run']}",
        f"{i['sessions_finished']}/{i['sessions_run']}", "",
    )  # fmt: skip
    table.add_row("commands (backend calls)", str(c["commands"]), str(i["commands"]), "")
    table.add_row("committed steps", str(c["committed_steps"]), str(i["committed_steps"]), "")
    row("overhead per command p50 (ms)", "overhead_per_command_ms", "p50")
    row("overhead per command p90 (ms)", "overhead_per_command_ms", "p90")
    row("overhead per command p99 (ms)", "overhead_per_command_ms", "p99")
    row("backend call p50 (ms)", "backend_per_command_ms", "p50", "{:.1f}")
    row("wall per committed step p50 (ms)", "wall_per_committed_step_ms", "p50", "{:.1f}")
    row("wall per session p50 (s)", "wall_per_session_s", "p50", "{:.2f}")
    console.print(table)

    parts = Table(title="Cluster overhead per command, split (ms)")
    for col in ("", "p50", "p90", "p99"):
        parts.add_column(col, justify="right" if col else "left")
    for label, key in (
        ("dispatch: command seen -> result seen, minus backend", "dispatch_per_command_ms"),
        ("turnaround: result seen -> next command seen", "turnaround_per_command_ms"),
        ("  of which evaluator: SRM result seen -> verdict seen", "evaluator_hop_ms"),
        ("  of which orchestrator: verdict or LRM result seen -> next command", "orchestrator_hop_ms"),
        ("total", "overhead_per_command_ms"),
    ):
        s = c[key]
        parts.add_row(label, f"{s['p50']:.2f}", f"{s['p90']:.2f}", f"{s['p99']:.2f}")
    added = doc["added_wall_per_committed_step_ms"]
    parts.add_row(
        "session wall difference per committed step (paired)",
        f"{added['p50']:.2f}", f"{added['p90']:.2f}", f"{added['p99']:.2f}",
    )  # fmt: skip
    console.print(parts)
    console.print(
        f"paired sessions {doc['paired_sessions']}, trajectories that differ between the modes: "
        f"{doc['trajectories_mismatched']}"
    )
    t = doc["targets"]
    console.print(
        f"overhead p50 per step (cluster, per command) {t['overhead_p50_ms']['measured']:.2f} ms "
        f"(target <= {TARGET_OVERHEAD_MS:g} ms): {met(t['overhead_p50_ms']['met'])}"
    )
    console.print(
        f"wall ratio cluster/in-process {t['wall_ratio']['measured']:.4f} (sum over paired sessions; "
        f"median per session {doc['wall_ratio_median_per_session']:.4f}) "
        f"(target <= {TARGET_WALL_RATIO:g}): {met(t['wall_ratio']['met'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round of 8 sessions")
    parser.add_argument("--sessions", type=int, default=None, help="sessions per round, run at once (16)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds, alternating who goes first (3)")
    parser.add_argument("--ms-per-token", type=float, default=20.0, help="simulator decode time (20)")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on one round of one mode (s)")
    args = parser.parse_args()
    args.sessions = args.sessions or (8 if args.quick else 16)
    args.rounds = args.rounds or (1 if args.quick else 3)
    run_benchmark(NAME, measure, report, args, measured=measured)


def measured(doc: dict[str, Any]) -> dict[str, object]:
    c = doc["modes"]["cluster"]
    return {
        "paired sessions": doc["paired_sessions"],
        "cluster commands": c["commands"],
        "cluster overhead per command p50": c["overhead_per_command_ms"]["p50"],
        "wall ratio": doc["wall_ratio"],
    }


if __name__ == "__main__":
    main()
