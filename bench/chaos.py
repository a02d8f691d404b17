"""The fault-injection suite (``make chaos``): every fault must end each session in exactly one terminal
event, with no step lost or committed twice, and bad input must land in the dead-letter stream.

Everything runs as real processes: nats-server (file store; a 3-node cluster for one case), each
service as its own ``python -m trigreason serve ...`` process, and the TGI-protocol load simulator
(``bench/_simhost.py``), behind a fault-injecting proxy (``bench/_chaos_proxy.py``) for the backend
cases. Sessions go in through the gateway (``POST /v1/sessions``); some are followed over SSE by a client
that reconnects with ``Last-Event-ID``. What each session did is read back from the event stream
(TRIG_EVT), not from what an observer happened to see.

Cases (one row each; cases of one group share a cluster and run one after the other):

- ``kill9-<service>`` for all five services: kill -9 mid-run, start a replacement;
- ``nats-restart``: kill -9 of nats-server mid-run, restarted on its store (after the kills, same stack);
- ``cluster3-kill-leader``, ``cluster3-kill-client``: 3-node JetStream cluster, streams and KV with 3
  replicas; kill -9 mid-run of the TRIG_EVT stream's leader, then of the node the services were given,
  each back after 5 s;
- ``backend-500|429|truncated|nonjson|oversized|refused|hang``: faults of the inference server;
- ``malformed``: garbage, wrong types, messages on the wrong subject and near-max-payload messages on
  every consumed subject, some naming a live session;
- ``load-1000``: 1,000 concurrent sessions, each service's RSS before and after;
- ``wan-partition``, ``wan-flap``, ``leaf-restart``, ``hub-restart`` (``--only wan,leaf,hub``): the edge-cloud
  topology (docs/sites.md, ``bench/_chaos_sites.py``): the WAN on the leaf connection cut for 30 s mid-run,
  down 2 s every 10 s for a minute, kill -9 and restart of the edge's nats-server, then of the hub's.

Counting per case: sessions = submitted; finished / failed = sessions whose event stream holds a
``SessionFinished`` / ``SessionFailed``; hung = neither within the case's deadline; lost = no terminal
event and no committed step, or a committed index missing; duplicated = a step index committed more than
once or more than one terminal event. Pass: hung, lost and duplicated are 0, finished + failed ==
sessions, every failed session has a code, plus the case's own checks (SSE exactly once, dead letters,
memory).

    uv run --frozen python bench/chaos.py [--quick] [--only CASE[,CASE...]] [--keep-logs]

Writes bench/results/chaos.json (a list of rows) on a full run; exits 1 if any case fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import nats
from _chaos_cluster import (
    SERVICE_NAMES,
    Ledger,
    NatsCluster,
    Procs,
    SseRecord,
    check_sse,
    follow_sse,
    free_port,
    new_tmp,
    python_service,
    read_dead_letters,
    rss_kib,
    start_simulator,
    wait_jetstream,
)
from _chaos_proxy import FaultMode, FaultProxy
from _chaos_sites import SITE, SiteFault, site_faults, sites_stack
from _harness import RESULTS_DIR, Status, console, machine, percentiles
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from rich.table import Table

from trigreason.proto import (
    CONSUMERS,
    EVENT_STREAM,
    ROLES,
    GenerateStep,
    SessionParams,
    SessionRequested,
    command_subject,
    encode,
    event_subject,
)
from trigreason.services.runtime import Bus, BusSettings, ensure_topology

# Sessions get a deadline when the contract has one (SessionParams.deadline_s); the case waits this long
# on top of it before it calls a session hung.
SESSION_DEADLINE_S = 30.0
CASE_SLACK_S = 15.0
ACK_WAIT_S = "4"  # kill -9 of a worker: its commands come back after this (default 30 s)
BACKEND_TIMEOUT_S = "2"  # for the hang case, if the worker reads TRIGREASON_BACKEND_TIMEOUT_S
RSS_GROWTH_LIMIT = 1.20
# An SSE stream gets this long after its session's end to deliver it (more than the gateway's 15 s
# keep-alive, so a gateway that notices a dead subscription by its heartbeats has time to recover).
SSE_GRACE_S = 20.0

# Short steps on the simulator: ~10 tokens at 10 ms; answers once the prompt holds 5 steps.
SIM_FAULTS = {
    "time_per_token_ms": 10,
    "prefill_ms": 2,
    "step_tokens": "fixed:10",
    "answer_after": 5,
    "answer_p": 1.0,
    "hesitation_p": 0.1,
    "concurrency": 256,
}
SIM_LOAD = {
    "time_per_token_ms": 0,
    "prefill_ms": 0,
    "step_tokens": "fixed:4",
    "answer_after": 3,
    "answer_p": 1.0,
    "hesitation_p": 0.0,
    "concurrency": 4096,
}


def deadline_supported() -> bool:
    return "deadline_s" in SessionParams.__struct_fields__


# -- one cluster: nats, simulator (and proxy), the five services -------------------------------------------


@dataclass
class Stack:
    name: str
    procs: Procs
    nats: NatsCluster
    nc: NatsClient
    js: JetStreamContext
    ledger: Ledger
    http: aiohttp.ClientSession
    env: dict[str, str]
    gateway_url: str
    proxy: FaultProxy | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: f"{random.getrandbits(32):08x}")
    policies: dict[str, str] = field(default_factory=dict)  # session id -> policy
    _log_offsets: dict[str, int] = field(default_factory=dict)

    def start_service(self, name: str) -> None:
        self.procs.start(name, python_service(name), env=self.env)

    async def ready(self, names: tuple[str, ...] | list[str]) -> None:
        workers = [n for n in names if n != "gateway"]
        if workers:
            await self.procs.wait_log(workers, '"consuming"')
        if "gateway" in names:
            await self.procs.wait_log(["gateway"], '"listening"')

    async def replace(self, name: str) -> dict[str, Any]:
        """kill -9, then a replacement; returns what happened."""
        pid = self.procs.kill9(name)
        killed_at = time.monotonic()
        await asyncio.sleep(0.5)
        self.start_service(name)
        await self.ready([name])
        return {"killed_pid": pid, "replacement_ready_s": round(time.monotonic() - killed_at, 2)}

    def service_rss(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for name in SERVICE_NAMES:
            out[name] = rss_kib(self.procs.current(name).pid)
        out["simulator"] = rss_kib(self.procs.current("simulator").pid)
        out["nats-server"] = sum(v for p in self.nats.pids() if (v := rss_kib(p)) is not None)
        return out

    def mark_logs(self) -> None:
        self._log_offsets = {p.name: p.stat().st_size for p in self.procs.dir.glob("*.log")}

    def log_summary(self) -> dict[str, dict[str, int]]:
        """Warnings and errors the services logged since ``mark_logs``, by event name."""
        out: dict[str, dict[str, int]] = {}
        for path in sorted(self.procs.dir.glob("*.log")):
            if path.name.startswith("simulator"):
                continue
            with path.open("rb") as f:
                f.seek(self._log_offsets.get(path.name, 0))
                text = f.read().decode("utf-8", errors="replace")
            counts: Counter[str] = Counter()
            for line in text.splitlines():
                if line.startswith("{"):
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if entry.get("level") in ("warning", "error", "critical"):
                        counts[str(entry.get("event"))] += 1
                elif line.startswith("Traceback"):
                    counts["Traceback"] += 1
            if counts:
                out[path.stem] = dict(counts.most_common(8))
        return out

    def log_lines(self, needle: str, limit: int = 3) -> list[str]:
        found: list[str] = []
        for path in sorted(self.procs.dir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    found.append(f"{path.stem}: {line[:400]}")
                    if len(found) >= limit:
                        return found
        return found


async def open_stack(
    name: str,
    log_root: Path,
    *,
    nodes: int = 1,
    sim: dict[str, Any],
    proxy: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Stack:
    procs = Procs(log_root / name)
    cluster = NatsCluster(nodes, new_tmp(f"trig-chaos-{name}-"))
    try:
        return await _open_stack(name, procs, cluster, sim=sim, proxy=proxy, extra_env=extra_env)
    except BaseException:  # nothing of a stack that did not start stays behind for the next group
        await asyncio.to_thread(procs.stop_all)
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
        raise


async def _open_stack(
    name: str,
    procs: Procs,
    cluster: NatsCluster,
    *,
    sim: dict[str, Any],
    proxy: bool,
    extra_env: dict[str, str] | None,
) -> Stack:
    nodes = len(cluster.nodes)
    await cluster.start()
    nc = await nats.connect(
        cluster.urls,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        name="chaos-harness",
        error_cb=_quiet,  # a restarted server is expected here: no tracebacks on the console
        disconnected_cb=_nothing,
    )
    js = nc.jetstream()
    await wait_jetstream(js)
    env = {
        **os.environ,
        "OTEL_SDK_DISABLED": "true",
        "TRIGREASON_NATS_URL": cluster.url,
        "TRIGREASON_ACK_WAIT_S": ACK_WAIT_S,
        "TRIGREASON_NATS_STORAGE": "file",
        **(extra_env or {}),
    }
    notes: dict[str, Any] = {}
    if nodes > 1:
        env["TRIGREASON_NATS_REPLICAS"] = str(nodes)
        # Do the services take a comma-separated list of servers? Ask the services' own Bus.connect.
        listed = ",".join(cluster.urls)
        try:
            bus = await asyncio.wait_for(
                Bus.connect(BusSettings.from_env({**env, "TRIGREASON_NATS_URL": listed}), name="chaos-probe"),
                20,
            )
            await bus.close()
            env["TRIGREASON_NATS_URL"] = listed
            notes["nats_url_list"] = "supported"
        except Exception as exc:
            notes["nats_url_list"] = (
                f"not supported ({type(exc).__name__}: {exc}); services get {cluster.url}"
            )
    # The topology as the services will create it (same settings), so the ledger can read from the start.
    await ensure_topology(js, BusSettings.from_env(env))
    sim_url = await start_simulator(procs, sim, env)
    fault_proxy: FaultProxy | None = None
    backend = sim_url
    if proxy:
        fault_proxy = FaultProxy(sim_url)
        backend = await fault_proxy.start()
    port = free_port()
    env.update({"TRIGREASON_SRM_URL": backend, "TRIGREASON_LRM_URL": backend, "TRIGREASON_PORT": str(port)})
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128))
    stack = Stack(
        name=name,
        procs=procs,
        nats=cluster,
        nc=nc,
        js=js,
        ledger=Ledger(js),
        http=http,
        env=env,
        gateway_url=f"http://127.0.0.1:{port}",
        proxy=fault_proxy,
        notes=notes,
    )
    for service in SERVICE_NAMES:
        stack.start_service(service)
    await stack.ready(list(SERVICE_NAMES))
    return stack


async def _quiet(exc: Exception) -> None:
    del exc


async def _nothing() -> None:
    return None


async def close_stack(stack: Stack) -> dict[str, float]:
    took = await asyncio.to_thread(stack.procs.stop_all)
    with contextlib.suppress(Exception):
        await stack.nc.close()
    await stack.http.close()
    if stack.proxy is not None:
        await stack.proxy.stop()
    stack.nats.stop()
    shutil.rmtree(stack.nats.root, ignore_errors=True)  # the JetStream stores
    return took


# -- sessions ------------------------------------------------------------------------------------------


def session_body(
    case: str, i: int, *, policy_mix: bool = True, deadline_s: float = SESSION_DEADLINE_S
) -> dict[str, Any]:
    params: dict[str, Any] = {"priming_steps": 1, "rho": 0.9, "max_steps": 40, "seed": i}
    if deadline_supported():
        params["deadline_s"] = deadline_s
    policy = "specreason" if policy_mix and i % 4 == 3 else "trigreason"
    return {"question": f"Chaos {case} #{i}: what is {i} + 2?", "policy": policy, "params": params}


async def submit_all(
    stack: Stack, case: str, n: int, *, policy_mix: bool = True, deadline_s: float = SESSION_DEADLINE_S
) -> tuple[list[str], list[str]]:
    """POST /v1/sessions n times (64 at once); returns the session ids and the errors of failed POSTs."""
    sids: list[str] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with gate:
            body = session_body(case, i, policy_mix=policy_mix, deadline_s=deadline_s)
            # A retried POST (the gateway was down) must not start a second session.
            headers = {"Idempotency-Key": f"chaos-{stack.run_id}-{case}-{i}".replace(" ", "-")}
            for attempt in range(5):
                submitted = time.time()
                try:
                    async with stack.http.post(
                        f"{stack.gateway_url}/v1/sessions", json=body, headers=headers
                    ) as resp:
                        text = await resp.text()
                        if resp.status == 202:
                            sid = json.loads(text)["session_id"]
                            stack.ledger.track(sid, submitted)
                            stack.policies[sid] = body["policy"]
                            sids.append(sid)
                            return
                        errors.append(f"{resp.status}: {text[:200]}")
                        return
                except aiohttp.ClientError as exc:
                    if attempt == 4:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(one(i) for i in range(n)))
    return sids, errors


async def until(cond: Callable[[], bool], stack: Stack, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await stack.ledger.poll()
        if cond():
            return True
        await asyncio.sleep(0.3)
    return False


Fault = Callable[[Stack, list[str]], Coroutine[Any, Any, dict[str, Any]]]


@dataclass
class Batch:
    sids: list[str]
    submit_errors: list[str]
    sse: list[SseRecord]
    detail: dict[str, Any]
    elapsed_s: float


async def run_batch(
    stack: Stack,
    case: str,
    n: int,
    *,
    fault: Fault | None = None,
    sse: int = 6,
    deadline_s: float = SESSION_DEADLINE_S + CASE_SLACK_S,
    policy_mix: bool = True,
    session_deadline_s: float = SESSION_DEADLINE_S,
) -> Batch:
    started = time.monotonic()
    stack.mark_logs()
    sids, errors = await submit_all(stack, case, n, policy_mix=policy_mix, deadline_s=session_deadline_s)
    wall_deadline = time.time() + deadline_s
    records = [SseRecord(sid) for sid in sids[:sse]]
    followers = [
        asyncio.create_task(follow_sse(stack.http, stack.gateway_url, rec, wall_deadline)) for rec in records
    ]
    fault_task = asyncio.create_task(fault(stack, sids)) if fault is not None else None
    ledger = stack.ledger
    with Status(f"{case}: sessions ended", len(sids)) as status:
        while time.time() < wall_deadline:
            await ledger.poll()
            done = ledger.terminal_count(sids)
            status.update(done, f"{ledger.commits(sids)} steps")
            if done == len(sids) and (fault_task is None or fault_task.done()):
                break
            await asyncio.sleep(0.5)
    detail: dict[str, Any] = {}
    if fault_task is not None:
        try:
            detail = await asyncio.wait_for(fault_task, 30)
        except Exception as exc:
            detail = {"fault_error": f"{type(exc).__name__}: {exc}"}
    # SSE clients of ended sessions are done; give the rest SSE_GRACE_S, then stop them.
    sse_done, pending = await asyncio.wait(followers, timeout=SSE_GRACE_S) if followers else (set(), set())
    for task in pending:
        task.cancel()
    for rec, task in zip(records, followers, strict=True):
        if task not in sse_done:
            rec.stalled = True  # still waiting for an end its session has (or a hung session's)
        elif not task.cancelled() and task.exception() is not None:
            rec.drops.append(repr(task.exception()))
    await ledger.poll()
    return Batch(sids, errors, records, detail, time.monotonic() - started)


def evaluate(
    stack: Stack, case: str, batch: Batch, *, sse_drops_allowed: bool = False, checks: list[str] | None = None
) -> dict[str, Any]:
    """The row: counts, the pass rule, and details."""
    ledger = stack.ledger
    finished = failed = hung = lost = duplicated = no_code = 0
    codes: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()  # "<policy> <finished|failed code|hung>"
    reasons: Counter[str] = Counter()
    to_terminal: list[float] = []
    examples: dict[str, list[str]] = {}
    for sid in batch.sids:
        rec = ledger.sessions[sid]
        end = rec.terminal
        indices = set(rec.committed)
        expected = set(
            range(rec.finished_steps if rec.finished_steps is not None else max(indices, default=-1) + 1)
        )
        gaps = bool(expected - indices)
        policy = stack.policies.get(sid, "?")
        outcomes[
            f"{policy} " + ("hung" if end is None else "finished" if end[0] == "finished" else end[1])
        ] += 1
        if end is None:
            hung += 1
            examples.setdefault("hung", []).append(sid)
        else:
            kind, code, at = end
            to_terminal.append(at - rec.submitted_at)
            if kind == "finished":
                finished += 1
                reasons[code] += 1
            else:
                failed += 1
                codes[code or "(none)"] += 1
                if not code:
                    no_code += 1
        if (end is None and not indices) or gaps:
            lost += 1
            examples.setdefault("lost", []).append(sid)
        if any(c > 1 for c in rec.committed.values()) or len(rec.terminals) > 1:
            duplicated += 1
            examples.setdefault("duplicated", []).append(sid)
    sessions = len(batch.sids) + len(batch.submit_errors)
    problems = list(checks or [])
    if batch.submit_errors:
        problems.append(f"{len(batch.submit_errors)} POST /v1/sessions failed: {batch.submit_errors[0]}")
    for label, count in (("hung", hung), ("lost", lost), ("duplicated", duplicated)):
        if count:
            problems.append(f"{count} {label}")
    if finished + failed != sessions:
        problems.append(f"finished + failed = {finished + failed} of {sessions}")
    if no_code:
        problems.append(f"{no_code} failed without a code")
    # SSE: every event exactly once, across reconnects.
    sse_bad = 0
    sse_drops = 0
    sse_reconnects = 0
    sse_statuses: Counter[int] = Counter()
    sse_reasons: Counter[str] = Counter()
    sse_stalled = 0
    sse_mismatch: Counter[str] = Counter()  # e.g. "missing requested": events a client never saw
    sse_lags: list[float] = []  # terminal event stored -> received by the SSE client
    for rec_sse in batch.sse:
        sse_reasons.update(rec_sse.drops)
        sess = ledger.sessions[rec_sse.sid]
        sse_stalled += rec_sse.stalled and sess.terminal is not None
        cmp = check_sse(rec_sse, sess)
        if any(cmp.values()) or (sess.terminal is not None and not rec_sse.done):
            sse_bad += 1
            for what, seqs in cmp.items():
                for seq in seqs:
                    sse_mismatch[f"{what} {sess.kinds.get(seq, '?')}"] += 1
        sse_drops += len(rec_sse.drops)
        sse_reconnects += max(0, rec_sse.connects - 1)
        sse_statuses.update(rec_sse.statuses)
        if rec_sse.done_at is not None and sess.terminal is not None:
            sse_lags.append(rec_sse.done_at - sess.terminal[2])
    if sse_bad:
        problems.append(f"SSE: {sse_bad} of {len(batch.sse)} clients did not see every event exactly once")
    if sse_stalled:
        problems.append(
            f"SSE: {sse_stalled} streams still open without the terminal event "
            f"{SSE_GRACE_S:.0f} s after their sessions ended"
        )
    if sse_drops and not sse_drops_allowed:
        problems.append(f"SSE: {sse_drops} streams ended before the terminal event")
    if batch.detail.get("running_at_fault") == 0:
        problems.append("the fault landed after every session had ended: nothing was tested")
    if "fault_error" in batch.detail:
        problems.append(f"the fault itself failed: {batch.detail['fault_error']}")
    exits = stack.procs.unexpected_exits()
    if exits:
        problems.append(f"services exited: {exits}")
    p99 = percentiles(to_terminal)["p99"] if to_terminal else math.nan
    row: dict[str, Any] = {
        "case": case,
        "sessions": sessions,
        "finished": finished,
        "failed": failed,
        "hung": hung,
        "lost": lost,
        "duplicated": duplicated,
        "seconds_to_terminal_p99": None if math.isnan(p99) else round(p99, 2),
        "pass": not problems,
        "problems": problems,
        "failure_codes": dict(codes),
        "finish_reasons": dict(reasons),
        "outcomes_by_policy": dict(sorted(outcomes.items())),
        "seconds_to_terminal_p50": round(percentiles(to_terminal)["p50"], 2) if to_terminal else None,
        "sse": {
            "clients": len(batch.sse),
            "not_exactly_once": sse_bad,
            "reconnects": sse_reconnects,
            "ended_early": sse_drops,
            "ended_early_how": dict(sse_reasons.most_common(5)),
            "stalled": sse_stalled,
            "mismatched_events": dict(sse_mismatch),
            "terminal_lag_s_max": round(max(sse_lags), 2) if sse_lags else None,
            "error_statuses": {str(k): v for k, v in sse_statuses.items()},
        },
        "elapsed_s": round(batch.elapsed_s, 1),
        "service_log_warnings": stack.log_summary(),
        **batch.detail,
    }
    if examples:
        row["example_sessions"] = {k: v[:3] for k, v in examples.items()}
    return row


# -- faults --------------------------------------------------------------------------------------------


def running(stack: Stack, sids: list[str]) -> int:
    """Sessions without a terminal event yet: a fault that lands when this is 0 tested nothing."""
    return sum(1 for s in sids if stack.ledger.sessions[s].terminal is None)


def kill_mid_run(service: str) -> Fault:
    async def fault(stack: Stack, sids: list[str]) -> dict[str, Any]:
        await until(lambda: stack.ledger.commits(sids) >= len(sids), stack, 30)
        at, live = stack.ledger.commits(sids), running(stack, sids)
        info = await stack.replace(service)
        return {"killed": service, "killed_after_steps": at, "running_at_fault": live, **info}

    return fault


async def restart_nats(stack: Stack, sids: list[str]) -> dict[str, Any]:
    await until(lambda: stack.ledger.commits(sids) >= len(sids), stack, 30)
    at, live = stack.ledger.commits(sids), running(stack, sids)
    node = stack.nats.nodes[0]
    stack.nats.kill9(node)
    await asyncio.sleep(1.0)
    t0 = time.monotonic()
    await stack.nats.start_node(node)
    return {
        "nats_killed_after_steps": at,
        "running_at_fault": live,
        "nats_restart_s": round(time.monotonic() - t0, 2),
    }


def kill_cluster_node(which: str) -> Fault:
    """kill -9 of one node of the 3-node cluster mid-run, back after 5 s: ``leader`` is the TRIG_EVT
    stream's leader, ``client`` the node the services were given (and connected to first)."""

    async def fault(stack: Stack, sids: list[str]) -> dict[str, Any]:
        await until(lambda: stack.ledger.commits(sids) >= len(sids), stack, 30)
        at, live = stack.ledger.commits(sids), running(stack, sids)
        info = await stack.js.stream_info(EVENT_STREAM)
        leader = info.cluster.leader if info.cluster is not None else None
        victim = stack.nats.node(leader) if which == "leader" and leader else stack.nats.nodes[0]
        stack.nats.kill9(victim)
        await asyncio.sleep(5.0)
        await stack.nats.start_node(victim)
        detail: dict[str, Any] = {
            "killed_node": victim.name,
            "services_connect_to": stack.env["TRIGREASON_NATS_URL"],
            "killed_after_steps": at,
            "running_at_fault": live,
            "evt_leader_before": leader,
        }
        # Until the node is back in the stream's replica set and caught up.
        for _ in range(40):
            with contextlib.suppress(Exception):
                info = await stack.js.stream_info(EVENT_STREAM)
                if info.cluster is not None:
                    detail["evt_leader_after"] = info.cluster.leader
                    detail["evt_replicas"] = [(r.name, r.current) for r in info.cluster.replicas or []]
                    if all(r.current for r in info.cluster.replicas or []):
                        break
            await asyncio.sleep(0.5)
        return detail

    return fault


def backend_fault(mode: FaultMode, rate: float) -> Fault:
    async def fault(stack: Stack, sids: list[str]) -> dict[str, Any]:
        assert stack.proxy is not None
        if mode == "refused":
            await until(lambda: stack.ledger.commits(sids) >= len(sids) // 2, stack, 30)
            live = running(stack, sids)
            await stack.proxy.refuse(True)
            await asyncio.sleep(4.0)
            await stack.proxy.refuse(False)
            return {"refused_for_s": 4.0, "running_at_fault": live, "injected": dict(stack.proxy.injected)}
        stack.proxy.set(mode, rate)
        # Faults stay on until the batch has ended; the caller reads proxy.injected and resets the mode.
        await until(lambda: stack.ledger.terminal_count(sids) == len(sids), stack, SESSION_DEADLINE_S + 5)
        stack.proxy.set("pass")
        return {"fault_rate": rate, "injected": dict(stack.proxy.injected)}

    return fault


# -- malformed messages --------------------------------------------------------------------------------

# Where malformed messages go, from the vocabulary: both command subjects, and every event kind a durable
# consumer decodes (``dead_lettered`` is the services' own notice about such garbage: not a case of its own).
_COMMANDS: tuple[str, ...] = tuple(command_subject(role) for role in ROLES)
EVENT_KINDS: tuple[str, ...] = tuple(
    subject.rsplit(".", 1)[1]
    for spec in CONSUMERS.values()
    if spec.stream == EVENT_STREAM
    for subject in spec.subjects
    if not subject.endswith(".dead_lettered")
)
TARGETS: tuple[str, ...] = (*_COMMANDS, *EVENT_KINDS)
# The type each subject carries (a consumed kind missing here fails the case loudly: add it).
_EXPECTED_TAG = {
    command_subject("srm"): "GenerateStep.v1",
    command_subject("lrm"): "JudgeStep.v1",
    "requested": "SessionRequested.v1",
    "lrm_step": "StepGenerated.v1",
    "srm_step": "StepGenerated.v1",
    "verdict": "Verdict.v1",
    "judged": "JudgeScored.v1",
    "step_failed": "StepFailed.v1",
    "cloud_unavailable": "CloudUnavailable.v1",
}


def _target_subject(target: str, sid: str) -> str:
    """A command subject as it is; an event kind as the subject of session ``sid``'s event."""
    return target if target in _COMMANDS else event_subject(sid, target)


def _tag_for(subject: str) -> str:
    return _EXPECTED_TAG.get(subject) or _EXPECTED_TAG[subject.rsplit(".", 1)[1]]


def malformed_payloads(subject: str, sid: str, base: str, max_payload: int) -> dict[str, tuple[str, bytes]]:
    """Bad messages for one subject: kind -> (marker, payload); the marker finds it in the dead letters."""
    tag = _tag_for(subject)
    out: dict[str, tuple[str, bytes]] = {}

    def add(kind: str, make: Callable[[str], bytes]) -> None:
        marker = f"{base}-{kind}"
        out[kind] = (marker, make(marker))

    rng = random.Random(base)
    add("bytes", lambda m: b"\x00\xff\xfe" + m.encode() + bytes(rng.randrange(256) for _ in range(64)))
    add("not_an_object", lambda m: json.dumps([m, 1, 2]).encode())
    add(
        "wrong_types",
        lambda m: json.dumps(
            {"type": tag, "session_id": sid, "command_id": 42, "step_index": m, "question": 7, "role": 3}
        ).encode(),
    )
    add("wrong_subject", lambda m: _wrong_subject(subject, sid, m))
    # Below the server's max_payload; near it, the dead-letter copy with its headers may not fit.
    add("oversized_half", lambda m: _big(tag, sid, m, max_payload // 2))
    add("oversized_max", lambda m: _big(tag, sid, m, max_payload - 512))
    return out


def _wrong_subject(subject: str, sid: str, marker: str) -> bytes:
    """A valid message of a type that never arrives on ``subject``."""
    if subject in _COMMANDS:
        return encode(SessionRequested(session_id=sid, question=marker))
    return encode(
        GenerateStep(
            session_id=sid, command_id=marker, step_index=0, role="srm", prompt="x", max_new_tokens=1
        )
    )


def _big(tag: str, sid: str, marker: str, size: int) -> bytes:
    # A wrong-typed ``at`` too: a message whose required fields are all present (CloudUnavailable needs only
    # its command id) would otherwise be valid, however large, and rightly not dead-lettered.
    head = json.dumps(
        {"type": tag, "session_id": sid, "command_id": marker, "at": "malformed", "question": ""}
    ).encode()[:-2]
    filler = b"x" * max(0, size - len(head) - 2)
    return head + filler + b'"}'


async def inject_malformed(stack: Stack, sids: list[str]) -> dict[str, Any]:
    """Garbage on made-up session ids on every subject, then one wrong-typed message naming each of
    eight live sessions (one per subject)."""
    max_payload = stack.nc.max_payload
    await until(lambda: stack.ledger.commits(sids) >= len(sids), stack, 30)
    published: list[tuple[str, str, str]] = []  # (marker, subject kind, payload kind)
    errors: list[str] = []
    n = 0
    for sub_kind in TARGETS:
        fake = f"chaosgarbage{n}"
        subject = _target_subject(sub_kind, fake)
        for kind, (marker, payload) in malformed_payloads(
            subject, fake, f"CHAOS-MAL-{n}", max_payload
        ).items():
            try:
                await stack.js.publish(subject, payload)
                published.append((marker, sub_kind, kind))
            except Exception as exc:
                errors.append(f"{sub_kind}/{kind}: {type(exc).__name__}: {exc}")
        n += 1
    # One wrong-typed message naming a live session, per subject.
    targeted: dict[str, str] = {}
    live = [s for s in sids if stack.ledger.sessions[s].terminal is None]
    for sub_kind, sid in zip(TARGETS, live, strict=False):
        subject = _target_subject(sub_kind, sid)
        marker, payload = malformed_payloads(subject, sid, f"CHAOS-MAL-{n}", max_payload)["wrong_types"]
        try:
            await stack.js.publish(subject, payload)
            published.append((marker, sub_kind, "targeted_wrong_types"))
            targeted[sid] = sub_kind
        except Exception as exc:
            errors.append(f"targeted {sub_kind}: {type(exc).__name__}: {exc}")
        n += 1
    stack.notes["malformed_published"] = published
    stack.notes["malformed_targeted"] = targeted
    return {"malformed_published": len(published), "publish_errors": errors, "max_payload": max_payload}


async def dead_letter_check(stack: Stack, wait_s: float = 10.0) -> tuple[dict[str, Any], list[str]]:
    published: list[tuple[str, str, str]] = stack.notes.get("malformed_published", [])
    targeted: dict[str, str] = stack.notes.get("malformed_targeted", {})
    missing: list[tuple[str, str, str]] = list(published)
    deadline = time.monotonic() + wait_s
    dlq_count = 0
    while missing and time.monotonic() < deadline:
        letters = await read_dead_letters(stack.js)
        dlq_count = len(letters)
        blob = [data for _, data in letters]
        missing = [p for p in published if not any(p[0].encode() in d for d in blob)]
        if missing:
            await asyncio.sleep(1.0)
    problems: list[str] = []
    if missing:
        problems.append(
            f"{len(missing)} of {len(published)} malformed messages not in TRIG_DLQ: "
            + ", ".join(f"{s}/{k}" for _, s, k in missing[:8])
        )
    not_failed = {}
    for sid, sub_kind in targeted.items():
        end = stack.ledger.sessions[sid].terminal
        if end is None or end[0] != "failed":
            not_failed[sub_kind] = end[0] + ":" + end[1] if end else "no terminal event"
    if not_failed:
        problems.append(
            f"{len(not_failed)} of {len(targeted)} sessions named by a dead-lettered message did not end "
            f"with SessionFailed: " + ", ".join(f"{k} -> {v}" for k, v in not_failed.items())
        )
    detail = {
        "dead_letters_total": dlq_count,
        "malformed_missing_from_dlq": [f"{s}/{k}" for _, s, k in missing],
        "targeted_sessions": {sub: stack.ledger.sessions[sid].terminal for sid, sub in targeted.items()},
    }
    return detail, problems


# -- the cases -----------------------------------------------------------------------------------------


@dataclass
class Config:
    quick: bool
    only: list[str]
    log_root: Path

    def wanted(self, case: str) -> bool:
        return not self.only or any(case == o or case.startswith(o) for o in self.only)

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full


KILL_CASES = [f"kill9-{s}" for s in SERVICE_NAMES]
CLUSTER_CASES = ["cluster3-kill-leader", "cluster3-kill-client"]
BACKEND_CASES: list[tuple[str, FaultMode, float]] = [
    ("backend-500", "http500", 0.3),
    ("backend-429", "http429", 0.3),
    ("backend-truncated", "truncated", 0.2),
    ("backend-nonjson", "nonjson", 0.05),
    ("backend-oversized", "oversized", 0.1),
    ("backend-refused", "refused", 0.0),
    ("backend-hang", "hang", 0.15),
]
# Edge and cloud (docs/sites.md): a hub and an edge leaf node joined through the WAN emulator.
SITE_CASES = ["wan-partition", "wan-flap", "leaf-restart", "hub-restart"]
ALL_CASES = [
    *KILL_CASES,
    "nats-restart",
    *CLUSTER_CASES,
    *(c for c, _, _ in BACKEND_CASES),
    "malformed",
    "load-1000",
    *SITE_CASES,
]
# Longer sessions for the site cases (about 0.5 s a step, an answer after 30 steps), so that a 30 s
# partition and a minute of flapping land on running sessions; their deadline leaves room for the wait.
SIM_SITES = {**SIM_FAULTS, "time_per_token_ms": 50, "answer_after": 30}
SITE_SESSION_DEADLINE_S = 150.0


async def group_kills(cfg: Config, rows: list[dict[str, Any]]) -> None:
    """kill -9 of each service, then of nats-server itself, on one single-node cluster."""
    cases = [c for c in [*KILL_CASES, "nats-restart"] if cfg.wanted(c)]
    if not cases:
        return
    stack = await open_stack("kill9", cfg.log_root, sim=SIM_FAULTS)
    try:
        for case in cases:
            if case == "nats-restart":
                batch = await run_batch(stack, case, cfg.n(24, 8), fault=restart_nats)
                rows.append(evaluate(stack, case, batch))
                continue
            service = case.removeprefix("kill9-")
            batch = await run_batch(stack, case, cfg.n(24, 8), fault=kill_mid_run(service), sse=cfg.n(8, 4))
            rows.append(evaluate(stack, case, batch, sse_drops_allowed=service == "gateway"))
    finally:
        rows_stop(rows, await close_stack(stack), len(cases))


async def group_cluster(cfg: Config, rows: list[dict[str, Any]]) -> None:
    cases = [c for c in CLUSTER_CASES if cfg.wanted(c)]
    if not cases:
        return
    stack = await open_stack("cluster3", cfg.log_root, nodes=3, sim=SIM_FAULTS)
    try:
        for case in cases:
            batch = await run_batch(
                stack,
                case,
                cfg.n(24, 8),
                fault=kill_cluster_node(case.removeprefix("cluster3-kill-")),
                deadline_s=SESSION_DEADLINE_S + 30,
            )
            batch.detail["nats_url_list"] = stack.notes.get("nats_url_list")
            info = await stack.js.stream_info(EVENT_STREAM)
            batch.detail["evt_stream_replicas"] = info.config.num_replicas
            rows.append(evaluate(stack, case, batch))
    finally:
        rows_stop(rows, await close_stack(stack), len(cases))


async def group_backend(cfg: Config, rows: list[dict[str, Any]]) -> None:
    cases = [c for c in BACKEND_CASES if cfg.wanted(c[0])]
    if not cases:
        return
    stack = await open_stack(
        "backend",
        cfg.log_root,
        sim=SIM_FAULTS,
        proxy=True,
        extra_env={"TRIGREASON_BACKEND_TIMEOUT_S": BACKEND_TIMEOUT_S},
    )
    try:
        for case, mode, rate in cases:
            assert stack.proxy is not None
            stack.proxy.injected.clear()
            batch = await run_batch(stack, case, cfg.n(24, 8), fault=backend_fault(mode, rate), sse=2)
            stack.proxy.set("pass")
            checks: list[str] = []
            if mode == "hang":
                # Did the worker give up on a hung request after TRIGREASON_BACKEND_TIMEOUT_S?
                timed_out = stack.log_lines("no response within", 1)
                batch.detail["backend_timeout_env_honoured"] = bool(
                    stack.log_lines(f"no response within {float(BACKEND_TIMEOUT_S)}s", 1)
                )
                if not timed_out:
                    checks.append(
                        "no worker timed out a hung backend request (TRIGREASON_BACKEND_TIMEOUT_S="
                        f"{BACKEND_TIMEOUT_S} not applied; sessions ended only by their deadline)"
                    )
            if not stack.proxy.injected:
                checks.append("no fault was injected")
            rows.append(evaluate(stack, case, batch, checks=checks))
    finally:
        rows_stop(rows, await close_stack(stack), len(cases))


async def group_malformed(cfg: Config, rows: list[dict[str, Any]]) -> None:
    if not cfg.wanted("malformed"):
        return
    # Longer sessions (answer after 12 steps) so the targeted ones are still running when hit.
    stack = await open_stack("malformed", cfg.log_root, sim={**SIM_FAULTS, "answer_after": 12})
    try:
        batch = await run_batch(stack, "malformed", cfg.n(24, 12), fault=inject_malformed)
        detail, problems = await dead_letter_check(stack)
        batch.detail.update(detail)
        rows.append(evaluate(stack, "malformed", batch, checks=problems))
    finally:
        rows_stop(rows, await close_stack(stack), 1)


async def group_load(cfg: Config, rows: list[dict[str, Any]]) -> None:
    case = "load-1000"
    if not cfg.wanted(case):
        return
    stack = await open_stack("load", cfg.log_root, sim=SIM_LOAD)
    try:
        warm = await run_batch(stack, "load warm-up", cfg.n(100, 50), sse=0, policy_mix=False)
        await asyncio.sleep(3)
        before = stack.service_rss()
        n = cfg.n(1000, 200)
        batch = await run_batch(
            stack, case, n, sse=cfg.n(50, 10), deadline_s=SESSION_DEADLINE_S + 150, policy_mix=False
        )
        await asyncio.sleep(5)
        after = stack.service_rss()
        checks: list[str] = []
        growth: dict[str, float | None] = {}
        for name in SERVICE_NAMES:
            b, a = before.get(name), after.get(name)
            growth[name] = round(a / b, 3) if a and b else None
            if a and b and a > b * RSS_GROWTH_LIMIT:
                checks.append(f"{name} RSS {b / 1024:.0f} -> {a / 1024:.0f} MiB (x{a / b:.2f})")
        warm_ended = stack.ledger.terminal_count(warm.sids)
        if warm.submit_errors or len(warm.sids) != warm_ended:
            checks.append(
                f"warm-up batch: {warm_ended} of {len(warm.sids) + len(warm.submit_errors)} ended"
                + (f"; POST failed: {warm.submit_errors[0]}" if warm.submit_errors else "")
            )
        batch.detail.update({"rss_kib_before": before, "rss_kib_after": after, "rss_ratio": growth})
        rows.append(evaluate(stack, case, batch, checks=checks))
    finally:
        rows_stop(rows, await close_stack(stack), 1)


def rows_stop(rows: list[dict[str, Any]], took: dict[str, float], n: int) -> None:
    """Record how long the services took to stop on SIGTERM on the group's rows."""
    for row in rows[-n:] if n else []:
        row["sigterm_stop_s"] = took


async def group_sites(cfg: Config, rows: list[dict[str, Any]]) -> None:
    """The edge-cloud cases, one after the other on one edge-cloud stack. LRM steps wait for the WAN (the
    default ``on_cloud_unavailable``), within the sessions' deadline."""
    cases = [c for c in SITE_CASES if cfg.wanted(c)]
    if not cases:
        return
    env = {**os.environ, "OTEL_SDK_DISABLED": "true", "TRIGREASON_ACK_WAIT_S": ACK_WAIT_S}
    faults = site_faults()
    async with sites_stack(cfg.log_root / "sites", sim=SIM_SITES, env=env) as (ec, nc):
        site = ec.sites[SITE]
        assert site.gateway_url is not None
        js = nc.jetstream(domain=site.bus.domain)
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128))
        stack = Stack(
            name="sites",
            procs=Procs(cfg.log_root / "sites-services"),
            nats=cast(NatsCluster, None),  # the edge-cloud stack owns its servers
            nc=nc,
            js=js,
            ledger=Ledger(js),
            http=http,
            env=env,
            gateway_url=site.gateway_url,
        )
        try:
            for case in cases:
                fault = faults[case]

                async def inject(stack: Stack, sids: list[str], fault: SiteFault = fault) -> dict[str, Any]:
                    at_fault: dict[str, Any] = {}

                    async def started() -> bool:
                        ok = await until(lambda: stack.ledger.commits(sids) >= len(sids), stack, 60)
                        at_fault["running_at_fault"] = running(stack, sids)  # when the fault begins
                        return ok

                    detail = await fault(ec, started)
                    return {**at_fault, **detail}

                batch = await run_batch(
                    stack,
                    case,
                    cfg.n(16, 8),
                    fault=inject,
                    sse=cfg.n(4, 2),
                    deadline_s=SITE_SESSION_DEADLINE_S + CASE_SLACK_S,
                    session_deadline_s=SITE_SESSION_DEADLINE_S,
                )
                rows.append(evaluate(stack, case, batch))
        finally:
            await http.close()


GROUPS = [group_kills, group_cluster, group_backend, group_malformed, group_load, group_sites]


# -- output --------------------------------------------------------------------------------------------


def report(rows: list[dict[str, Any]]) -> None:
    table = Table(title="chaos: every session ends exactly once")
    for col in ("case", "sessions", "finished", "failed", "hung", "lost", "dup", "p99 s", "", "why"):
        table.add_column(col, justify="left" if col in ("case", "why") else "right", overflow="fold")
    for r in rows:
        codes = ", ".join(f"{k} {v}" for k, v in r["failure_codes"].items())
        why = "; ".join(r["problems"]) or codes
        p99 = r["seconds_to_terminal_p99"]
        table.add_row(
            r["case"],
            str(r["sessions"]),
            str(r["finished"]),
            str(r["failed"]),
            str(r["hung"]),
            str(r["lost"]),
            str(r["duplicated"]),
            "-" if p99 is None else f"{p99:.1f}",
            "[bold green]pass[/]" if r["pass"] else "[bold red]FAIL[/]",
            why,
        )
    console.print(table)


async def main_async(cfg: Config) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    deadline = f"{SESSION_DEADLINE_S:.0f} s" if deadline_supported() else "not in the contract yet"
    console.print(f"session deadline (SessionParams.deadline_s): {deadline}; logs in {cfg.log_root}")
    for group in GROUPS:
        try:
            await group(cfg, rows)
        except Exception as exc:  # a group that could not even run is a failed row, not a crash
            console.print_exception()
            rows.append(
                {
                    "case": group.__name__.removeprefix("group_"),
                    "sessions": 0,
                    "finished": 0,
                    "failed": 0,
                    "hung": 0,
                    "lost": 0,
                    "duplicated": 0,
                    "seconds_to_terminal_p99": None,
                    "pass": False,
                    "problems": [f"harness error: {type(exc).__name__}: {exc}"[:500]],
                    "failure_codes": {},
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sessions per case (development)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated cases or prefixes: {', '.join(ALL_CASES)}"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the services' logs of passing cases too"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default: bench/results/chaos.json; /tmp/chaos-dev.json with --quick or --only)",
    )
    args = parser.parse_args()
    only = [o.strip() for o in args.only.split(",") if o.strip()]
    unknown = [o for o in only if not any(c.startswith(o) for c in ALL_CASES)]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; cases: {', '.join(ALL_CASES)}")
    log_root = new_tmp("trig-chaos-logs-")
    cfg = Config(quick=args.quick, only=only, log_root=log_root)
    started = time.monotonic()
    rows = asyncio.run(main_async(cfg))
    duration = time.monotonic() - started
    report(rows)
    failed = [r["case"] for r in rows if not r["pass"]]
    dev_run = args.quick or bool(only)
    out: Path = args.out or (
        Path(tempfile.gettempdir()) / "chaos-dev.json" if dev_run else RESULTS_DIR / "chaos.json"
    )
    run = {
        "command": " ".join(["uv run --frozen python bench/chaos.py", *sys.argv[1:]]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": round(duration, 1),
        "session_deadline_s": SESSION_DEADLINE_S if deadline_supported() else None,
        **machine(),
    }
    for row in rows:
        row["run"] = run
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2, default=_jsonable) + "\n")
    if failed or args.keep_logs:
        console.print(f"services' logs kept in {log_root}")
    else:
        shutil.rmtree(log_root, ignore_errors=True)
    console.print(f"wrote {out} in {duration:.0f} s; {len(rows) - len(failed)} of {len(rows)} cases passed")
    if failed:
        console.print(f"[bold red]failed:[/] {', '.join(failed)}")
        sys.exit(1)


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON: {value!r}")


if __name__ == "__main__":
    main()
