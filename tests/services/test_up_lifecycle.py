"""``trigreason up``, ``serve NAME`` and ``solve`` as real processes: each stops within 10 s of SIGINT or
SIGTERM, started in the foreground or as a background job (SIGINT inherited ignored), with work in flight
and an SSE stream open, leaves no child process behind and prints no traceback. And ``up`` reads the
services' settings from the environment as ``serve`` does (TRIGREASON_API_TOKENS turns auth on).

Backends: the load simulator (no model loads), except one test that runs the real CPU inference servers
on the tiny model. Children are found by session id (each command starts in a session of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import aiohttp
import pytest

from trigreason.nats_server import LocalNatsServer
from trigreason.services.backend_sim import SimSettings, StepLength, make_app, start_server

pytestmark = pytest.mark.slow

STOP_WITHIN_S = 10.0
_PY = sys.executable


# --- processes -------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(name, state, session id) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return name, fields[0], int(fields[3])


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] != "Z"


def session_members(sid: int) -> dict[int, str]:
    """Live (not zombie) processes of session ``sid``: the command and everything it started."""
    members: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[2] == sid and st[1] != "Z":
                members[int(entry)] = st[0]
    return members


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Command:
    """A ``python -m trigreason ...`` in a session of its own. ``mode``: ``fg`` as a shell runs a
    foreground command, ``bg`` as ``cmd &`` from a script (through bash: SIGINT ignored), ``ign`` with
    SIGINT set to SIG_IGN directly (what a background job inherits)."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str], mode: str = "fg") -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by kill()
        argv = [_PY, "-m", "trigreason", *args]
        full_env = {**os.environ, "OTEL_SDK_DISABLED": "true", **env}
        if mode == "bg":
            line = " ".join(subprocess.list2cmdline([a]) for a in argv)
            self.leader = subprocess.Popen(
                ["bash", "-c", f"{line} & wait"],
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                start_new_session=True,
            )
        else:
            self.leader = subprocess.Popen(
                argv,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                start_new_session=True,
                preexec_fn=_ignore_sigint if mode == "ign" else None,
            )
        self.mode = mode
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        """The trigreason process itself (in ``bg`` mode bash's child)."""
        if self.mode != "bg":
            return self.leader.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for pid, name in session_members(self.leader.pid).items():
                if pid != self.leader.pid and name.startswith("python"):
                    return pid
            time.sleep(0.05)
        raise AssertionError("the background job did not start")

    def sigign(self) -> int:
        """The process's ignored-signal mask (``SigIgn`` in /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return int(line.split()[1], 16)
        raise AssertionError("no SigIgn line")

    def children(self) -> dict[int, str]:
        return {
            p: n for p, n in session_members(self.leader.pid).items() if p not in (self.leader.pid, self.pid)
        }

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def stop(self, sig: signal.Signals, *, group: bool = False) -> float:
        """Send ``sig`` (to the whole process group: a Ctrl-C at a terminal); seconds until it exited."""
        pid = self.pid
        sent = time.monotonic()
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.leader.wait(timeout=STOP_WITHIN_S + 20)
        return time.monotonic() - sent

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.leader.pid, signal.SIGKILL)
        for pid in session_members(self.leader.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.leader.wait()
        self._stderr.close()


@contextlib.contextmanager
def command(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, mode: str = "fg"
) -> Iterator[Command]:
    cmd = Command(args, env=env or {}, mode=mode)
    try:
        yield cmd
    finally:
        cmd.kill()


def assert_stopped_cleanly(cmd: Command, seconds: float, children: Mapping[int, str]) -> None:
    err = cmd.stderr()
    assert cmd.leader.poll() is not None, f"still running {seconds:.1f}s after the signal:\n{err[-3000:]}"
    assert seconds < STOP_WITHIN_S, f"took {seconds:.1f}s to stop:\n{err[-3000:]}"
    for needle in ("Traceback", "DrainTimeoutError", "never retrieved", "was destroyed but it is pending"):
        assert needle not in err, f"{needle!r} on stderr:\n{err[-5000:]}"
    left = {pid: name for pid, name in children.items() if _alive(pid)}
    assert not left, f"child processes left behind: {left}"
    assert not session_members(cmd.leader.pid), session_members(cmd.leader.pid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _wait_http(url: str, cmd: Command, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert cmd.leader.poll() is None, f"exited with {cmd.leader.returncode}:\n{cmd.stderr()[-3000:]}"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready in {timeout_s}s:\n{cmd.stderr()[-3000:]}")


async def _wait_stderr(cmd: Command, needle: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if needle in cmd.stderr():
            return
        assert cmd.leader.poll() is None, f"exited with {cmd.leader.returncode}:\n{cmd.stderr()[-3000:]}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"{needle!r} not on stderr in {timeout_s}s:\n{cmd.stderr()[-3000:]}")


class Busy:
    """A session in flight on a gateway, and a client reading its SSE stream: the stop has work to cut."""

    def __init__(self, gateway: str, headers: Mapping[str, str] | None = None) -> None:
        self.gateway = gateway
        self.headers = dict(headers or {})
        self._http = aiohttp.ClientSession()
        self._reader: asyncio.Task[None] | None = None
        self.events: list[str] = []

    async def start(self) -> None:
        body = {"question": "What is 2 + 2?", "policy": "trigreason"}
        async with self._http.post(f"{self.gateway}/v1/sessions", json=body, headers=self.headers) as resp:
            assert resp.status == 202, await resp.text()
            session_id = (await resp.json())["session_id"]
        self._reader = asyncio.create_task(self._read(session_id))
        await asyncio.sleep(1.0)  # the first step is under way

    async def _read(self, session_id: str) -> None:
        url = f"{self.gateway}/v1/sessions/{session_id}/events"
        with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
            async with self._http.get(url, headers=self.headers) as resp:
                async for line in resp.content:
                    if line.startswith(b"event:"):
                        self.events.append(line.decode().split(":", 1)[1].strip())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._http.close()


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    """Steps of 5 s (50 tokens x 100 ms): a stop always finds a generation in flight."""
    settings = SimSettings(time_per_token_ms=100, step_tokens=StepLength("fixed", 50, 50), concurrency=16)
    runner, url = await start_server(make_app(settings), host="127.0.0.1", port=0)
    yield url
    await runner.cleanup()


@pytest.fixture
async def quick_simulator() -> AsyncIterator[str]:
    """Short steps, an answer after two: a session finishes in about a second."""
    settings = SimSettings(
        time_per_token_ms=1,
        step_tokens=StepLength("fixed", 10, 10),
        answer_after=2,
        answer_p=1.0,
        concurrency=16,
    )
    runner, url = await start_server(make_app(settings), host="127.0.0.1", port=0)
    yield url
    await runner.cleanup()


@contextlib.asynccontextmanager
async def five_services(
    backend: str, port: int, *, env: Mapping[str, str] | None = None, mode: str = "fg"
) -> AsyncIterator[dict[str, Command]]:
    """nats-server and `trigreason serve NAME` for each service, its own process, all ready."""
    async with LocalNatsServer() as nats_server:
        full_env = {
            "TRIGREASON_NATS_URL": nats_server.url,
            "TRIGREASON_SRM_URL": backend,
            "TRIGREASON_LRM_URL": backend,
            "TRIGREASON_NATS_STORAGE": "memory",
            "TRIGREASON_PORT": str(port),
            **(env or {}),
        }
        names = ("gateway", "orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker")
        with contextlib.ExitStack() as stack:
            procs = {n: stack.enter_context(command(["serve", n], env=full_env, mode=mode)) for n in names}
            await _wait_http(f"http://127.0.0.1:{port}/readyz", procs["gateway"])
            for name in names[1:]:
                await _wait_stderr(procs[name], '"consuming"')
            yield procs


def _up_args(port: int, backend: str) -> list[str]:
    return ["up", "--port", str(port), "--srm-url", backend, "--lrm-url", backend]


# --- trigreason up ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "mode", "group"),
    [
        (signal.SIGINT, "fg", False),
        (signal.SIGTERM, "fg", False),
        (signal.SIGINT, "fg", True),  # Ctrl-C at a terminal: the whole foreground process group
        (signal.SIGINT, "bg", False),  # `trigreason up &` from a script, then kill -INT
        (signal.SIGTERM, "bg", False),
        (signal.SIGINT, "ign", False),
    ],
    ids=["sigint", "sigterm", "ctrl-c-group", "background-sigint", "background-sigterm", "sigint-ignored"],
)
async def test_up_stops_within_10s_leaving_nothing_behind(
    simulator: str, sig: signal.Signals, mode: str, group: bool
) -> None:
    port = _free_port()
    with command(_up_args(port, simulator), mode=mode) as up:
        if mode != "fg":
            assert up.sigign() & (1 << (signal.SIGINT - 1)), "the test meant SIGINT to start ignored"
        await _wait_http(f"http://127.0.0.1:{port}/readyz", up)
        busy = Busy(f"http://127.0.0.1:{port}")
        try:
            await busy.start()
            children = up.children()
            assert "nats-server" in children.values(), children
            seconds = await asyncio.to_thread(up.stop, sig, group=group)
        finally:
            await busy.close()
        print(f"up stopped {seconds:.2f}s after {sig.name} ({mode}{', group' if group else ''})")
        assert_stopped_cleanly(up, seconds, children)
        assert up.leader.returncode == 0, up.stderr()[-3000:]


def _tiny_model() -> Path:
    from trigreason.services.tgi_cpu.models import resolve_model

    try:
        return resolve_model("tiny", progress=False)
    except Exception as exc:  # offline with no cache
        pytest.skip(f"no tiny model: {exc}")


@pytest.mark.parametrize("when", ["ready", "loading"])
async def test_up_stops_its_cpu_inference_servers(when: str) -> None:
    """The real children: two ``serve tgi-cpu`` processes (tiny model), stopped mid-session and while they
    load."""
    model = str(_tiny_model())
    port = _free_port()
    args = ["up", "--port", str(port), "--srm-model", model, "--lrm-model", model]
    # 1,024 tokens of context: the gateway refuses a step budget (512 by default) a server could not fit
    env = {"TRIGREASON_TGI_CPU_THREADS": "1", "TRIGREASON_TGI_CPU_CTX": "1024"}
    with command(args, env=env) as up:
        if when == "ready":
            await _wait_http(f"http://127.0.0.1:{port}/readyz", up, timeout_s=120)
        else:
            await _wait_stderr(up, "starting the SRM CPU inference server")
            await asyncio.sleep(0.5)
        children = up.children()
        servers = [p for p, n in children.items() if n.startswith("python")]
        expected = {2} if when == "ready" else {1, 2}  # the LRM's may have started by then
        assert len(servers) in expected, children
        busy = Busy(f"http://127.0.0.1:{port}") if when == "ready" else None
        try:
            if busy is not None:
                await busy.start()  # the servers are generating when the stop comes
            seconds = await asyncio.to_thread(up.stop, signal.SIGTERM)
        finally:
            if busy is not None:
                await busy.close()
        print(f"up with tgi-cpu ({when}) stopped {seconds:.2f}s after SIGTERM")
        assert_stopped_cleanly(up, seconds, children)


async def test_up_reads_the_gateway_settings_from_the_environment(
    quick_simulator: str, tmp_path: Path
) -> None:
    """TRIGREASON_API_TOKENS turns auth on in `up` as in `serve gateway`; flags override the environment:
    --port over TRIGREASON_PORT (here unusable), --profile over TRIGREASON_PROFILE."""
    for name, tau in (("env", 1.25), ("flag", 1.75)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"params": {"tau": tau}}))
    port = _free_port()
    env = {
        "TRIGREASON_API_TOKENS": "secret",
        "TRIGREASON_PORT": "1",
        "TRIGREASON_PROFILE": str(tmp_path / "env.json"),
    }
    args = [*_up_args(port, quick_simulator), "--profile", str(tmp_path / "flag.json")]
    with command(args, env=env) as up:
        gateway = f"http://127.0.0.1:{port}"
        await _wait_http(f"{gateway}/readyz", up)
        body = {"question": "What is 2 + 2?"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{gateway}/v1/sessions", json=body) as resp:
                assert resp.status == 401, await resp.text()
            async with http.post(
                f"{gateway}/v1/sessions", json=body, headers={"Authorization": "Bearer wrong"}
            ) as resp:
                assert resp.status == 401, await resp.text()
            auth = {"Authorization": "Bearer secret"}
            async with http.post(f"{gateway}/v1/sessions", json=body, headers=auth) as resp:
                assert resp.status == 202, await resp.text()
                session_id = (await resp.json())["session_id"]
            params: dict[str, object] = {}
            deadline = time.monotonic() + 20
            while not params and time.monotonic() < deadline:
                async with http.get(f"{gateway}/v1/sessions/{session_id}", headers=auth) as resp:
                    if resp.status == 200:
                        params = (await resp.json()).get("params") or {}  # none while queued
                await asyncio.sleep(0.1)
            assert params.get("tau") == 1.75, params  # the --profile flag's, not TRIGREASON_PROFILE's
        children = up.children()
        seconds = await asyncio.to_thread(up.stop, signal.SIGTERM)
        assert_stopped_cleanly(up, seconds, children)


@pytest.mark.parametrize("how", ["up", "serve"])
async def test_the_workers_read_the_backend_settings_from_the_environment(simulator: str, how: str) -> None:
    """TRIGREASON_BACKEND_TIMEOUT_S=1 against steps of 5 s: the workers give up after 1 s, under `up` as
    under `serve srm-worker` (both used to ignore it: 300 s)."""
    env = {"TRIGREASON_BACKEND_TIMEOUT_S": "1"}
    port = _free_port()
    if how == "up":
        with command(_up_args(port, simulator), env=env) as up:
            await _wait_http(f"http://127.0.0.1:{port}/readyz", up)
            busy = Busy(f"http://127.0.0.1:{port}")
            try:
                await busy.start()
                await _wait_stderr(up, "no response within 1.0s", timeout_s=20)
            finally:
                await busy.close()
        return
    async with five_services(simulator, port, env=env) as procs:
        busy = Busy(f"http://127.0.0.1:{port}")
        try:
            await busy.start()
            await _wait_stderr(procs["lrm-worker"], "no response within 1.0s", timeout_s=20)  # priming
        finally:
            await busy.close()


async def test_up_rejects_a_bad_setting_before_starting_anything(quick_simulator: str) -> None:
    with command(_up_args(_free_port(), quick_simulator), env={"TRIGREASON_CONCURRENCY": "many"}) as up:
        assert await asyncio.to_thread(up.leader.wait, 30) == 2
        assert "error:" in up.stderr(), up.stderr()
        assert "Traceback" not in up.stderr(), up.stderr()


async def test_up_on_a_taken_port_says_so_and_leaves_nothing(quick_simulator: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with command(_up_args(port, quick_simulator)) as up:
            children: dict[int, str] = {}
            while up.leader.poll() is None:  # what it started before it failed
                children |= up.children()
                await asyncio.sleep(0.05)
            assert up.leader.returncode == 2, up.stderr()[-3000:]
            assert f"cannot listen on 127.0.0.1:{port}" in up.stderr(), up.stderr()[-3000:]
            assert_stopped_cleanly(up, 0.0, children)


# --- trigreason serve NAME -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "mode", "collector"),
    [
        (signal.SIGTERM, "fg", False),
        (signal.SIGINT, "fg", False),
        (signal.SIGINT, "ign", False),
        (signal.SIGTERM, "fg", True),  # spans to export to an OTLP collector that refuses connections
    ],
    ids=["sigterm", "sigint", "sigint-ignored", "sigterm-collector-down"],
)
async def test_every_service_stops_within_10s(
    simulator: str, sig: signal.Signals, mode: str, collector: bool
) -> None:
    """All five services, each its own process, a session in flight and an SSE stream open: each exits
    within 10 s of the signal, with no traceback."""
    port = _free_port()
    env = {"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_free_port()}"}
    async with five_services(simulator, port, mode=mode, env=env if collector else None) as procs:
        busy = Busy(f"http://127.0.0.1:{port}")
        try:
            await busy.start()
            times = await asyncio.gather(*(asyncio.to_thread(p.stop, sig) for p in procs.values()))
        finally:
            await busy.close()
        for (name, proc), seconds in zip(procs.items(), times, strict=True):
            print(f"serve {name} stopped {seconds:.2f}s after {sig.name} ({mode}, collector {collector})")
            assert_stopped_cleanly(proc, seconds, {})
            assert proc.leader.returncode == 0, (name, proc.stderr()[-3000:])


async def test_a_service_waiting_for_nats_stops_at_once() -> None:
    """NATS not reachable: the service retries its connection; SIGTERM ends that without a drain.
    (nats-py logs each failed attempt with a traceback through its default error callback: Bus.connect
    sets no error_cb, so stderr is not checked here.)"""
    env = {"TRIGREASON_NATS_URL": f"nats://127.0.0.1:{_free_port()}"}
    with command(["serve", "orchestrator"], env=env) as proc:
        await asyncio.sleep(3)
        assert proc.leader.poll() is None, proc.stderr()[-3000:]
        seconds = await asyncio.to_thread(proc.stop, signal.SIGTERM)
        print(f"serve orchestrator (no NATS) stopped {seconds:.2f}s after SIGTERM")
        assert proc.leader.poll() is not None
        assert seconds < 3.0, proc.stderr()[-3000:]


# --- trigreason solve ------------------------------------------------------------------------------------


async def test_solve_still_solves_on_the_embedded_stack(quick_simulator: str) -> None:
    args = ["solve", "What is 2 + 2?", "--srm-url", quick_simulator, "--lrm-url", quick_simulator, "--json"]
    with command([*args, "--expect", "4"]) as solve:
        assert await asyncio.to_thread(solve.leader.wait, 60) == 0, solve.stderr()[-3000:]
        assert solve.leader.stdout is not None
        doc = json.loads(solve.leader.stdout.read())
        assert doc["end_reason"] != "failed", doc
        assert doc["steps"], doc
        # graded against the reference as eval grades it (the simulator's answer is no 4)
        assert doc["expected"] == "4"
        assert doc["correct"] is (doc["answer"] is not None and doc["answer"].strip() == "4")
        assert not session_members(solve.leader.pid)


@pytest.mark.parametrize(
    ("sig", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "sigterm"]
)
async def test_interrupting_solve_leaves_nothing_behind(
    simulator: str, sig: signal.Signals, group: bool
) -> None:
    args = ["solve", "What is 2 + 2?", "--srm-url", simulator, "--lrm-url", simulator, "--json"]
    with command(args) as solve:
        await _wait_stderr(solve, "services up")
        await asyncio.sleep(1.0)  # the first step is under way
        children = solve.children()
        assert "nats-server" in children.values(), children
        seconds = await asyncio.to_thread(solve.stop, sig, group=group)
        print(f"solve stopped {seconds:.2f}s after {sig.name}")
        assert_stopped_cleanly(solve, seconds, children)
        assert solve.leader.returncode == 128 + sig.value, solve.stderr()[-3000:]


# --- trigreason serve tgi-cpu / backend-sim --------------------------------------------------------------


@pytest.mark.parametrize("server", ["tgi-cpu", "backend-sim"])
async def test_an_inference_server_stops_within_10s_mid_generation(server: str) -> None:
    """A generation of ~30 s in flight: the server cancels it, not waiting for it (aiohttp: up to 60 s)."""
    port = _free_port()
    if server == "tgi-cpu":
        args = ["serve", "tgi-cpu", "--model", str(_tiny_model()), "--port", str(port), "--threads", "1"]
    else:
        args = [
            "serve",
            "backend-sim",
            "--port",
            str(port),
            "--time-per-token-ms",
            "500",
            "--step-tokens",
            "60",
        ]
    body = {"inputs": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,", "parameters": {"max_new_tokens": 1500}}
    with command(args) as proc:
        url = f"http://127.0.0.1:{port}"
        await _wait_http(f"{url}/health", proc)
        async with aiohttp.ClientSession() as http:

            async def generate() -> None:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.post(f"{url}/generate", json=body) as resp:
                        await resp.read()

            generating = asyncio.create_task(generate())
            await asyncio.sleep(1.5)
            assert not generating.done()
            seconds = await asyncio.to_thread(proc.stop, signal.SIGTERM)
            await asyncio.wait_for(generating, 5)
        print(f"serve {server} stopped {seconds:.2f}s after SIGTERM mid-generation")
        assert_stopped_cleanly(proc, seconds, {})
