"""The embedded stack: a loopback nats-server, CPU inference servers for the two models, and every
service, in one process tree that goes away on exit (Ctrl-C included). What `solve`, `up` and `make demo`
use when nothing is configured."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from opentelemetry.sdk.trace import TracerProvider

from trigreason._host import SERVICES, ServiceName, ServiceSettings, run_service
from trigreason._nats_server import LocalNatsServer, find_nats_server
from trigreason.proto import Role, TrigReasonError
from trigreason.services.gateway import GatewaySettings
from trigreason.services.runtime import BusSettings, die_with_parent
from trigreason.services.worker.backends import Backend, make_backend

__all__ = ["LocalNatsServer", "StackSpec", "embedded_stack", "find_nats_server", "inference_servers"]

_DRAIN_S = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class StackSpec:
    nats_url: str | None = None  # None: start a local nats-server
    srm_url: str | None = None  # None: start a CPU inference server for srm_model
    lrm_url: str | None = None
    srm_model: str = "srm"
    lrm_model: str = "lrm"
    gateway_port: int | None = None  # None: no gateway
    concurrency: int = 8
    default_params: dict[str, Any] = field(default_factory=dict)  # the gateway's (from a profile)
    server_start_timeout_s: float = 600.0


@dataclass(frozen=True, kw_only=True, slots=True)
class RunningStack:
    nats_url: str
    srm_url: str
    lrm_url: str
    gateway_url: str | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _start_inference_server(
    model: str, role: Role, timeout_s: float, say: Callable[[str], None]
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_level = os.environ.get("TRIGREASON_SERVER_LOG_LEVEL", "WARNING")
    cmd = [sys.executable, "-m", "trigreason", "serve", "tgi-cpu", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--log-level", log_level]  # fmt: skip
    say(f"starting the {role.upper()} CPU inference server ({model}) on {url}")
    # Its own progress (model download, load) goes to our stderr; it dies with us, even on kill -9.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, preexec_fn=die_with_parent)  # noqa: ASYNC220
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TrigReasonError(
                    f"the {role} inference server exited with {proc.returncode}", code="backend_start"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return proc, url
            await asyncio.sleep(0.5)
    proc.kill()
    raise TrigReasonError(
        f"the {role} inference server did not become healthy in {timeout_s:.0f}s", code="backend_start"
    )


async def _start_inference_servers(
    spec: StackSpec, procs: list[subprocess.Popen[bytes]], say: Callable[[str], None]
) -> dict[Role, str]:
    urls: dict[Role, str] = {}
    wanted: tuple[tuple[Role, str | None, str], ...] = (
        ("srm", spec.srm_url, spec.srm_model),
        ("lrm", spec.lrm_url, spec.lrm_model),
    )
    for role, url, model in wanted:
        if url is None:
            proc, url = await _start_inference_server(model, role, spec.server_start_timeout_s, say)
            procs.append(proc)
        urls[role] = url
    return urls


def _stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.asynccontextmanager
async def inference_servers(
    spec: StackSpec, *, say: Callable[[str], None] = lambda _m: None
) -> AsyncIterator[dict[Role, str]]:
    """Only the backends: the URLs ``spec`` gives, and CPU inference servers for the rest."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield await _start_inference_servers(spec, procs, say)
    finally:
        _stop_processes(procs)


@contextlib.asynccontextmanager
async def embedded_stack(
    spec: StackSpec, *, tracer_provider: TracerProvider, say: Callable[[str], None] = lambda _m: None
) -> AsyncIterator[RunningStack]:
    """Start what ``spec`` does not point at, run every service as a task, tear all of it down after."""
    procs: list[subprocess.Popen[bytes]] = []
    nats_server: LocalNatsServer | None = None
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        nats_url = spec.nats_url
        if nats_url is None:
            nats_server = LocalNatsServer()
            await nats_server.start()
            nats_url = nats_server.url
            say(f"started nats-server with JetStream on {nats_url}")
        urls = await _start_inference_servers(spec, procs, say)

        async def backend_factory(role: Role) -> Backend:
            return await make_backend(urls[role])

        settings = ServiceSettings(
            bus=BusSettings(nats_url=nats_url, storage="memory" if nats_server else "file"),
            port=spec.gateway_port or 0,
            concurrency=spec.concurrency,
            gateway=GatewaySettings(default_params=spec.default_params),
        )
        ready: asyncio.Queue[str] = asyncio.Queue()
        names: list[ServiceName] = [s for s in SERVICES if s != "gateway" or spec.gateway_port is not None]
        for name in names:
            tasks.append(
                asyncio.create_task(
                    run_service(
                        name,
                        settings,
                        stop=stop,
                        tracer_provider=tracer_provider,
                        backend_factory=backend_factory,
                        on_ready=ready.put_nowait,
                    )
                )
            )
        gateway_url = None
        for _ in names:
            getter = asyncio.ensure_future(ready.get())
            done, _pending = await asyncio.wait([getter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                for t in done:
                    t.result()  # a service died while starting: raise its error
            item = getter.result()
            if item.startswith("http://"):
                gateway_url = item
        say("services up: " + ", ".join(names))
        yield RunningStack(
            nats_url=nats_url, srm_url=urls["srm"], lrm_url=urls["lrm"], gateway_url=gateway_url
        )
    finally:
        stop.set()
        if tasks:
            # Let services drain briefly; a backend that hangs or keeps failing must not hold up the exit.
            _done, pending = await asyncio.wait(tasks, timeout=_DRAIN_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        _stop_processes(procs)
        if nats_server is not None:
            await nats_server.stop()
