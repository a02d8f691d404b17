"""Shared machinery of the cluster benchmarks: service processes, simulators, session submission, the
event observer, statistics, progress and results. Not a benchmark itself (``make bench`` runs
``bench/bench_*.py`` only)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp
import msgspec
import numpy as np
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from trigreason.proto import (
    EVENT_STREAM,
    SessionParams,
    SessionRequested,
    TypedDecoder,
    encode,
    event_subject,
)
from trigreason.services.trigger_evaluator.policies import PolicyError, PolicyRegistry

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

# Off a terminal (make bench > log) rich would wrap tables at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)


# -- processes ----------------------------------------------------------------------------------------


class Processes:
    """Child processes with their stderr in log files; all stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="trig-bench-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(
        self, label: str, argv: Sequence[str], *, env: dict[str, str] | None = None, stdout: int | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{label}.log").open("wb")
        self._logs[label] = log
        proc = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=env if env is not None else dict(os.environ),
            stdout=subprocess.DEVNULL if stdout is None else stdout,
            stderr=log,
        )
        self.procs[label] = proc
        return proc

    def log(self, label: str) -> str:
        try:
            return (self.dir / f"{label}.log").read_text(errors="replace")
        except OSError:
            return ""

    async def wait_log(self, labels: Iterable[str], needle: str, timeout_s: float = 120.0) -> None:
        """Until every ``label``'s log contains ``needle`` (a service logs ``consuming`` when ready)."""
        deadline = time.monotonic() + timeout_s
        waiting = set(labels)
        while waiting:
            for label in list(waiting):
                proc = self.procs[label]
                if proc.poll() is not None:
                    raise RuntimeError(f"{label} exited with {proc.returncode}:\n{self.log(label)[-2000:]}")
                if needle in self.log(label):
                    waiting.discard(label)
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout_s:.0f} s: {', '.join(sorted(waiting))}")
            await asyncio.sleep(0.05)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each live child, by any nats-server this process
        started, and by this process itself. Linux /proc; only this process elsewhere."""
        out = {label: t for label, proc in self.procs.items() if (t := _cpu_of(proc.pid)) is not None}
        for pid in _children_named("nats-server"):
            t = _cpu_of(pid)
            if t is not None:
                out["nats-server"] = out.get("nats-server", 0.0) + t
        times = os.times()
        out["bench (observer)"] = times.user + times.system
        return out

    def stop(self, label: str) -> None:
        proc = self.procs.pop(label)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._logs.pop(label).close()

    def stop_all(self) -> None:
        """SIGTERM to all at once (services drain in parallel), then wait for each."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for label in list(self.procs):
            self.stop(label)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
        if exc is not None:
            console.print(f"[yellow]service logs kept in {self.dir}[/]")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def _stat(pid: int) -> list[str] | None:
    try:
        # Fields after the command name, which is in parentheses and may hold spaces.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_of(pid: int) -> float | None:
    fields = _stat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _children_named(name: str) -> list[int]:
    me = os.getpid()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields is None or int(fields[1]) != me:
            continue
        try:
            if (entry / "comm").read_text().strip() == name:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def service_env(
    nats_url: str, *, srm_url: str | None = None, lrm_url: str | None = None, concurrency: int | None = None
) -> dict[str, str]:
    env = {**os.environ, "TRIGREASON_NATS_URL": nats_url, "OTEL_SDK_DISABLED": "true"}
    if srm_url:
        env["TRIGREASON_SRM_URL"] = srm_url
    if lrm_url:
        env["TRIGREASON_LRM_URL"] = lrm_url
    if concurrency is not None:
        env["TRIGREASON_CONCURRENCY"] = str(concurrency)
    return env


def start_service(procs: Processes, label: str, service: str, env: dict[str, str]) -> None:
    """``python -m trigreason serve SERVICE`` as its own process (its own core, its own event loop)."""
    procs.start(label, [sys.executable, "-m", "trigreason", "serve", service], env=env)


async def start_simulators(procs: Processes, specs: list[dict[str, Any]], label: str = "sims") -> list[str]:
    """One process serving one simulator per spec (``SimSettings`` fields); returns their base URLs."""
    proc = procs.start(
        label, [sys.executable, str(BENCH_DIR / "_simhost.py"), json.dumps(specs)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    if not line:
        raise RuntimeError(f"simulators did not start:\n{procs.log(label)[-2000:]}")
    urls = json.loads(line)
    assert isinstance(urls, list)
    return [str(u) for u in urls]


_REQUESTS = re.compile(r'^backend_sim_requests_total\{route="/generate",status="200"\} ([0-9.e+]+)$', re.M)


async def simulator_calls(http: aiohttp.ClientSession, url: str) -> int:
    """Generations a simulator has answered so far (from its /metrics)."""
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return int(sum(float(m) for m in _REQUESTS.findall(text)))


# -- sessions and events -----------------------------------------------------------------------------


def session_params(**fields: Any) -> SessionParams:
    """Request parameters through the gateway's own validation (the policy registry's
    ``session_params``: the policy known, every bound checked; ``msgspec.ValidationError`` otherwise). A
    bare ``SessionParams(...)`` checks nothing: a value out of bounds would only surface as a
    dead-lettered request and an empty measurement."""
    try:
        return PolicyRegistry.from_env().session_params(fields)
    except PolicyError as exc:
        raise msgspec.ValidationError(exc.message) from None


_REQUEST_DECODER: TypedDecoder[SessionRequested] = TypedDecoder(SessionRequested)


async def submit(js: JetStreamContext, session_id: str, question: str, params: SessionParams) -> None:
    """What the gateway does: publish ``SessionRequested`` with its deterministic message id. The
    message is decoded first as the orchestrator will decode it, so a request it would dead-letter
    fails the benchmark here, with the reason."""
    request = SessionRequested(
        session_id=session_id, question=question, params=params, requested_at=time.time()
    )
    data = encode(request)
    _REQUEST_DECODER.decode(data)
    await js.publish(
        event_subject(session_id, "requested"), data, headers={"Nats-Msg-Id": f"{session_id}.requested"}
    )


async def read_events(js: JetStreamContext, subject: str, *, batch: int = 2000) -> list[bytes]:
    """Every message of the event stream on ``subject`` (wildcards allowed), read from JetStream itself:
    the record a client replays, not what an observer happened to see."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0
    )
    sub = await js.pull_subscribe(subject, stream=EVENT_STREAM, config=config)
    out: list[bytes] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=2.0)
            except NatsTimeoutError:
                break
            out.extend(m.data for m in msgs)
            if msgs and msgs[-1].metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out


# -- statistics and output ----------------------------------------------------------------------------


def percentiles(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """n, mean and p50/p90/p99 (linear interpolation), times ``scale`` (1000: seconds to ms)."""
    if not values:
        return {"n": 0, "mean": math.nan, "p50": math.nan, "p90": math.nan, "p99": math.nan}
    arr = np.asarray(values, dtype=float) * scale
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "n": len(values),
        "mean": float(arr.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
    }


def met(ok: bool) -> str:
    return "[bold green]met[/]" if ok else "[bold red]MISSED[/]"


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average_at_end": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    # Per-step CPU figures depend on the processor: record which one produced them.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_results(name: str, doc: dict[str, Any], *, quick: bool = False) -> Path:
    """``bench/results/NAME.json``; a ``--quick`` run (a smoke test, not a measurement of record) writes
    ``bench/results/quick/NAME.json`` instead, which git ignores."""
    folder = RESULTS_DIR / "quick" if quick else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    full = {
        "benchmark": name,
        "command": "uv run --frozen python " + " ".join([f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        **doc,
    }
    path.write_text(json.dumps(full, indent=2, default=_jsonable) + "\n")
    return path


def empty_measurements(values: Mapping[str, object]) -> list[str]:
    """The names whose value is missing, not a number, NaN, infinite, zero or negative: a measurement
    that measured nothing. Every figure a benchmark reports is a count, a time, a rate or a ratio of them,
    so a figure <= 0 means that nothing was measured."""
    bad = []
    for label, value in values.items():
        measured = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        )
        if not measured:
            bad.append(label)
    return bad


def exit_if_empty(values: Mapping[str, object]) -> None:
    """Exit with status 1, naming each empty measurement (``empty_measurements``), if there is one. A
    missed *target* never gets here: targets are printed, not turned into an exit status."""
    bad = empty_measurements(values)
    if bad:
        for label in bad:
            console.print(f"[bold red]empty measurement: {label} = {values[label]!r}[/]")
        console.print("[bold red]the benchmark measured nothing for the figures above: failing[/]")
        raise SystemExit(1)


def run_benchmark(
    name: str,
    measure: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
    report: Callable[[dict[str, Any]], None],
    args: argparse.Namespace,
    *,
    measured: Callable[[dict[str, Any]], Mapping[str, object]],
) -> None:
    """Measure, print the report, write ``bench/results/NAME.json`` with the run's duration, then exit
    with status 1 if any of the figures ``measured`` picks from the document is empty."""
    started = time.monotonic()
    doc = asyncio.run(measure(args))
    doc["duration_s"] = round(time.monotonic() - started, 1)
    values = measured(doc)
    doc["empty_measurements"] = empty_measurements(values)
    report(doc)
    path = write_results(name, doc, quick=bool(getattr(args, "quick", False)))
    console.print(f"wrote {path} in {doc['duration_s']:.0f} s")
    exit_if_empty(values)


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON: {value!r}")


class Status:
    """Progress of one phase: a rich progress bar on a terminal, a status line every few seconds
    elsewhere (``make bench > log``)."""

    def __init__(self, description: str, total: float, every_s: float = 3.0) -> None:
        self.description = description
        self.total = total
        self.every_s = every_s
        self._last = 0.0
        self._done = 0.0
        self._info = ""
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> Status:
        if console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, info="")
        else:
            console.print(f"{self.description} ...")
        self._last = time.monotonic()
        return self

    def update(self, done: float, info: str = "") -> None:
        self._done, self._info = done, info
        if self._progress is not None:
            self._progress.update(self._task, completed=done, info=info)
        elif time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            console.print(f"  {self.description}: {done:.0f}/{self.total:.0f} {info}")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
        else:
            console.print(f"  {self.description}: {self._done:.0f}/{self.total:.0f} {self._info}")
