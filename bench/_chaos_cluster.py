"""Machinery of ``bench/chaos.py``: service processes that can be killed and replaced, a 3-node NATS
cluster, the event-stream ledger that counts what each session committed, an SSE client that reconnects
with ``Last-Event-ID``, and RSS readings. Not a benchmark itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import msgspec
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from trigreason.nats_server import find_nats_server
from trigreason.proto import (
    DEAD_LETTER_STREAM,
    EVENT_STREAM,
    SessionFailed,
    SessionFinished,
    StepCommitted,
    dead_letter_subject,
    decode_message,
    session_events,
)
from trigreason.services.runtime import die_with_parent

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

SERVICE_NAMES = ("gateway", "orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process (``VmRSS`` in /proc/<pid>/status), KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


# -- processes ----------------------------------------------------------------------------------------


class Procs:
    """Child processes, each with its stderr in ``<dir>/<label>.log``. A replacement after a kill gets a
    new label (``orchestrator#2``) so the victim's log stays."""

    def __init__(self, log_dir: Path) -> None:
        self.dir = log_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self.generation: Counter[str] = Counter()
        self.killed: set[str] = set()  # labels we killed on purpose

    def label(self, name: str) -> str:
        n = self.generation[name]
        return name if n <= 1 else f"{name}#{n}"

    def start(
        self, name: str, argv: Sequence[str], *, env: dict[str, str], stdout: int | None = None
    ) -> subprocess.Popen[bytes]:
        self.generation[name] += 1
        label = self.label(name)
        log = (self.dir / f"{label.replace('#', '.')}.log").open("ab")
        self._logs[label] = log
        proc = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL if stdout is None else stdout,
            stderr=log,
            preexec_fn=die_with_parent,
        )
        self.procs[label] = proc
        return proc

    def current(self, name: str) -> subprocess.Popen[bytes]:
        return self.procs[self.label(name)]

    def log(self, label: str) -> str:
        try:
            return (self.dir / f"{label.replace('#', '.')}.log").read_text(errors="replace")
        except OSError:
            return ""

    async def wait_log(self, names: Sequence[str], needle: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = {self.label(n) for n in names}
        while waiting:
            for label in list(waiting):
                proc = self.procs[label]
                if needle in self.log(label):
                    waiting.discard(label)
                elif proc.poll() is not None:
                    raise RuntimeError(f"{label} exited with {proc.returncode}:\n{self.log(label)[-3000:]}")
            if waiting and time.monotonic() > deadline:
                tails = "\n".join(f"--- {lb}\n{self.log(lb)[-1500:]}" for lb in sorted(waiting))
                raise RuntimeError(
                    f"not ready after {timeout_s:.0f} s: {', '.join(sorted(waiting))}\n{tails}"
                )
            await asyncio.sleep(0.05)

    def kill9(self, name: str) -> int:
        label = self.label(name)
        proc = self.procs[label]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.killed.add(label)
        return proc.pid

    def unexpected_exits(self) -> dict[str, int]:
        """Processes that ended although nobody killed them: label -> exit status."""
        return {
            label: proc.returncode
            for label, proc in self.procs.items()
            if label not in self.killed and proc.poll() is not None
        }

    def stop_all(self, timeout_s: float = 12.0) -> dict[str, float]:
        """SIGTERM to all, then wait; SIGKILL what is left after ``timeout_s``. Returns how long each
        process took to stop (SIGKILLed ones are reported as the timeout)."""
        started = time.monotonic()
        took: dict[str, float] = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for label, proc in self.procs.items():
            if label in self.killed:
                continue
            left = max(0.1, timeout_s - (time.monotonic() - started))
            try:
                proc.wait(timeout=left)
                took[label] = round(time.monotonic() - started, 2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                took[label] = timeout_s
        for log in self._logs.values():
            log.close()
        return took


# -- NATS: one node or a 3-node cluster ----------------------------------------------------------------


@dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int
    store: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class NatsCluster:
    """``size`` nats-server processes on loopback with JetStream (file store). ``size == 1`` runs one
    server without cluster routes. Nodes keep their port and store across ``kill9``/``start_node``."""

    def __init__(self, size: int, root: Path) -> None:
        self.root = root
        self.nodes: list[NatsNode] = []
        ports = [(free_port(), free_port()) for _ in range(size)]
        for i, (port, cport) in enumerate(ports):
            name = f"n{i + 1}"
            store = root / name
            store.mkdir(parents=True, exist_ok=True)
            lines = [
                f"server_name: {name}",
                f"listen: 127.0.0.1:{port}",
                f'jetstream {{ store_dir: "{store / "js"}" }}',
            ]
            if size > 1:
                routes = ", ".join(f"nats-route://127.0.0.1:{c}" for j, (_, c) in enumerate(ports) if j != i)
                lines.append(f"cluster {{ name: chaos, listen: 127.0.0.1:{cport}, routes: [{routes}] }}")
            config = root / f"{name}.conf"
            config.write_text("\n".join(lines) + "\n")
            self.nodes.append(NatsNode(name, port, cport, store, config))

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    async def start_node(self, node: NatsNode, timeout_s: float = 15.0) -> None:
        log = node.store / "nats-server.log"
        node.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [str(find_nats_server()), "-c", str(node.config), "--log", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"nats-server {node.name} exited: {_tail(log)}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", node.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError(f"nats-server {node.name} did not start: {_tail(log)}")

    async def start(self) -> None:
        await asyncio.gather(*(self.start_node(n) for n in self.nodes))

    def kill9(self, node: NatsNode) -> None:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()

    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-1500:]
    except OSError:
        return "(no log)"


async def wait_jetstream(js: JetStreamContext, timeout_s: float = 30.0) -> None:
    """Until the JetStream API answers (a cluster first elects its meta leader)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            await js.account_info()
            return
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.25)
    raise RuntimeError(f"JetStream not available after {timeout_s:.0f} s: {last!r}")


# -- the event-stream ledger ---------------------------------------------------------------------------


@dataclass
class SessionRecord:
    """What the event stream (TRIG_EVT) holds for one session."""

    submitted_at: float = 0.0
    seqs: list[int] = field(default_factory=list)  # stream sequences of all its events, in order
    kinds: dict[int, str] = field(default_factory=dict)  # sequence -> last subject token
    garbage: set[int] = field(default_factory=set)  # sequences that are no valid message (chaos input)
    committed: Counter[int] = field(default_factory=Counter)
    terminals: list[tuple[str, str, float]] = field(default_factory=list)  # (kind, code or reason, at)
    finished_steps: int | None = None
    undecodable: int = 0
    terminal_seq: int | None = None  # stream sequence of the first terminal event

    @property
    def terminal(self) -> tuple[str, str, float] | None:
        return self.terminals[0] if self.terminals else None

    def seqs_until_terminal(self) -> list[int]:
        """What an SSE client must see: every event up to and including the first terminal one."""
        end = self.terminal_seq if self.terminal_seq is not None else self.seqs[-1] if self.seqs else 0
        return [s for s in self.seqs if s <= end and s not in self.garbage]


_committed = msgspec.json.Decoder(StepCommitted)
_finished = msgspec.json.Decoder(SessionFinished)
_failed = msgspec.json.Decoder(SessionFailed)


class Ledger:
    """Reads TRIG_EVT incrementally (a fresh ephemeral consumer per poll, so a killed node or a restarted
    server costs a retry, never a silently stalled reader) and keeps a ``SessionRecord`` per session."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.last_seq = 0
        self.sessions: dict[str, SessionRecord] = {}
        self.read_errors = 0

    def track(self, sid: str, submitted_at: float) -> None:
        self.sessions.setdefault(sid, SessionRecord()).submitted_at = submitted_at

    async def poll(self, batch: int = 4000) -> None:
        try:
            await self._poll(batch)
        except Exception:
            self.read_errors += 1  # the server is restarting or a node is gone: try again next time

    async def _poll(self, batch: int) -> None:
        start = self.last_seq + 1
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
            opt_start_seq=start if start > 1 else None,
            inactive_threshold=30.0,
            mem_storage=True,
        )
        sub = await self.js.pull_subscribe(session_events(">"), stream=EVENT_STREAM, config=config)
        try:
            while True:
                try:
                    msgs = await sub.fetch(batch, timeout=1.0)
                except (NatsTimeoutError, TimeoutError):
                    return
                for msg in msgs:
                    self._record(msg.subject, msg.data, msg.metadata)
                if not msgs or (msgs[-1].metadata.num_pending or 0) == 0:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _record(self, subject: str, data: bytes, meta: Any) -> None:
        seq = int(meta.sequence.stream)
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        parts = subject.split(".")
        if len(parts) != 4:
            return
        rec = self.sessions.get(parts[2])
        if rec is None:
            return  # not one of ours (garbage on made-up ids, other runs)
        rec.seqs.append(seq)
        kind = parts[3]
        rec.kinds[seq] = kind
        at = meta.timestamp.timestamp() if meta.timestamp is not None else time.time()
        try:
            decode_message(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            rec.garbage.add(seq)  # the malformed case's own input: a gateway may or may not relay it
            return
        try:
            if kind == "committed":
                rec.committed[_committed.decode(data).index] += 1
            elif kind == "finished":
                fin = _finished.decode(data)
                rec.terminals.append(("finished", fin.reason, at))
                rec.finished_steps = fin.steps
            elif kind == "failed":
                rec.terminals.append(("failed", _failed.decode(data).code, at))
            if kind in ("finished", "failed") and rec.terminal_seq is None:
                rec.terminal_seq = seq
        except (msgspec.DecodeError, msgspec.ValidationError):
            rec.undecodable += 1

    def terminal_count(self, sids: Sequence[str]) -> int:
        return sum(1 for s in sids if self.sessions[s].terminals)

    def commits(self, sids: Sequence[str]) -> int:
        return sum(len(self.sessions[s].committed) for s in sids)


async def read_stream(js: JetStreamContext, stream: str, subject: str) -> list[tuple[str, bytes]]:
    """Every message (subject, data) of ``stream`` on ``subject``."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0, mem_storage=True
    )
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    out: list[tuple[str, bytes]] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=1.0)
            except (NatsTimeoutError, TimeoutError):
                break
            out.extend((m.subject, m.data) for m in msgs)
            if msgs and (msgs[-1].metadata.num_pending or 0) == 0:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return out


async def read_dead_letters(js: JetStreamContext) -> list[tuple[str, bytes]]:
    return await read_stream(js, DEAD_LETTER_STREAM, dead_letter_subject(">"))


# -- an SSE client that reconnects ---------------------------------------------------------------------


@dataclass
class SseRecord:
    sid: str
    ids: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    done: bool = False
    connects: int = 0
    # The stream ended (cleanly or not) before the terminal event.
    drops: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)  # non-200 answers to a (re)connect
    stalled: bool = False  # set by the harness: still waiting when its session had ended
    done_at: float | None = None  # wall-clock time the terminal event arrived


async def follow_sse(http: aiohttp.ClientSession, base_url: str, rec: SseRecord, deadline: float) -> None:
    """Follow ``GET /v1/sessions/{sid}/events`` into ``rec`` until the terminal event; on any disconnect
    reconnect with ``Last-Event-ID`` (every 0.2 s while the gateway is down)."""
    sid = rec.sid
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=None)
    while not rec.done and time.time() < deadline:
        headers = {"Last-Event-ID": str(rec.ids[-1])} if rec.ids else {}
        streaming = False
        try:
            async with http.get(
                f"{base_url}/v1/sessions/{sid}/events", headers=headers, timeout=timeout
            ) as resp:
                rec.connects += 1
                if resp.status != 200:
                    rec.statuses[resp.status] += 1
                    await resp.read()
                    await asyncio.sleep(0.2)
                    continue
                streaming = True
                ev_id: str | None = None
                ev_kind = "message"
                while time.time() < deadline:
                    raw = await asyncio.wait_for(resp.content.readline(), max(0.1, deadline - time.time()))
                    if not raw:
                        rec.drops.append("eof")
                        break
                    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    if line.startswith("id:"):
                        ev_id = line[3:].strip()
                    elif line.startswith("event:"):
                        ev_kind = line[6:].strip()
                    elif line == "":
                        if ev_id is not None:
                            rec.ids.append(int(ev_id))
                            rec.kinds.append(ev_kind)
                            if ev_kind in ("finished", "failed"):
                                rec.done = True
                                rec.done_at = time.time()
                                break
                        ev_id, ev_kind = None, "message"
        except Exception as exc:  # refused, reset, a broken chunk, a bad line: reconnect
            if streaming:  # an open stream broke (a refused reconnect is not another drop)
                rec.drops.append(type(exc).__name__)
        if not rec.done:
            await asyncio.sleep(0.2)


def check_sse(rec: SseRecord, session: SessionRecord) -> dict[str, list[int]]:
    """Compare the ids a client saw with the session's valid events up to its first terminal one."""
    seen = Counter(rec.ids)
    expected = session.seqs_until_terminal()
    want = set(expected) | session.garbage
    return {
        "missing": [s for s in expected if s not in seen],
        "duplicated": [s for s, n in seen.items() if n > 1],
        "unexpected": [s for s in seen if s not in want],
    }


# -- simulators -----------------------------------------------------------------------------------------


async def start_simulator(procs: Procs, spec: dict[str, Any], env: dict[str, str]) -> str:
    """One TGI-protocol load simulator (``bench/_simhost.py``) as its own process; its base URL."""
    proc = procs.start(
        "simulator",
        [sys.executable, str(BENCH_DIR / "_simhost.py"), json.dumps([spec])],
        env=env,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    if not line:
        raise RuntimeError(f"simulator did not start:\n{procs.log('simulator')[-2000:]}")
    urls = json.loads(line)
    return str(urls[0])


def new_tmp(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def python_service(name: str) -> list[str]:
    return [sys.executable, "-m", "trigreason", "serve", name]
