"""The embedded stack: a loopback nats-server, CPU inference servers for the two models, and every
service, in one process tree that goes away on exit (Ctrl-C included). What `solve`, `up` and `make demo`
use when nothing is configured.

The services read their settings from the environment exactly as `trigreason serve NAME` does (the gateway's
API tokens and profile, the bus's limits, ...); what the stack starts itself (NATS, the backends, the gateway
port) overrides it. Teardown is bounded: services drain for ``_DRAIN_S`` (or TRIGREASON_DRAIN_S), then
children get SIGTERM and, ``_CHILD_STOP_S`` later, SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from opentelemetry.sdk.trace import TracerProvider

from trigreason.host import SERVICES, ServiceName, ServiceSettings, run_service
from trigreason.nats_server import LocalNatsServer
from trigreason.proto import Role, TrigReasonError
from trigreason.services.runtime import die_with_parent, stop_processes
from trigreason.services.worker.backends import Backend, BackendSettings, make_backend

__all__ = ["RunningStack", "StackSpec", "embedded_stack", "inference_servers", "services_ready"]

_DRAIN_S = 2.0  # unless TRIGREASON_DRAIN_S says otherwise: work in flight on our own NATS is lost anyway
_CHILD_STOP_S = 2.0


@dataclass(frozen=True, kw_only=True, slots=True)
class StackSpec:
    nats_url: str | None = None  # None: start a local nats-server
    srm_url: str | None = None  # None: start a CPU inference server for srm_model
    lrm_url: str | None = None
    srm_model: str = "srm"
    lrm_model: str = "lrm"
    gateway_port: int | None = None  # None: no gateway; 0: any free port
    concurrency: int | None = None  # None: TRIGREASON_CONCURRENCY (8)
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
    model: str,
    role: Role,
    timeout_s: float,
    say: Callable[[str], None],
    procs: list[subprocess.Popen[bytes]],
) -> str:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_level = os.environ.get("TRIGREASON_SERVER_LOG_LEVEL", "WARNING")
    cmd = [sys.executable, "-m", "trigreason", "serve", "tgi-cpu", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--log-level", log_level]  # fmt: skip
    say(f"starting the {role.upper()} CPU inference server ({model}) on {url}")
    # Its own progress (model download, load) goes to our stderr; it dies with us, even on kill -9. Its own
    # process group: a Ctrl-C at the terminal reaches us only, and we stop it after the workers that use it.
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=die_with_parent, process_group=0
    )
    procs.append(proc)  # stopped by the caller, also when we are interrupted while it loads
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
                        return url
            await asyncio.sleep(0.5)
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
            url = await _start_inference_server(model, role, spec.server_start_timeout_s, say, procs)
        urls[role] = url
    return urls


@contextlib.asynccontextmanager
async def inference_servers(
    spec: StackSpec, *, say: Callable[[str], None] = lambda _m: None
) -> AsyncIterator[dict[Role, str]]:
    """Only the backends: the URLs ``spec`` gives, and CPU inference servers for the rest."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield await _start_inference_servers(spec, procs, say)
    finally:
        await stop_processes(procs, timeout_s=_CHILD_STOP_S)


def service_settings(
    spec: StackSpec, env: Mapping[str, str], *, nats_url: str, local_nats: bool
) -> ServiceSettings:
    """The services' settings, read as ``trigreason serve`` reads them (``ServiceSettings.from_env``:
    the gateway's ``GatewaySettings.from_env``, ``BusSettings.from_env``, ...), with what the stack decides
    itself on top: its NATS, the gateway port, and no per-service probe port (they would all want one)."""
    base = ServiceSettings.from_env(env)
    bus = dataclasses.replace(base.bus, nats_url=nats_url)
    if local_nats and not env.get("TRIGREASON_NATS_STORAGE"):
        bus = dataclasses.replace(bus, storage="memory")  # the local server's store goes away with it
    host: dict[str, Any] = {"metrics_port": 0}
    if not env.get("TRIGREASON_DRAIN_S"):
        host["drain_s"] = _DRAIN_S
    if spec.gateway_port is not None:
        host["port"] = spec.gateway_port
    if spec.concurrency is not None:
        host["concurrency"] = spec.concurrency
    return dataclasses.replace(base, bus=bus, host=dataclasses.replace(base.host, **host))


async def services_ready(
    ready: asyncio.Queue[str], tasks: Sequence[asyncio.Task[None]], count: int
) -> str | None:
    """Wait for ``count`` services to report ready on ``ready`` (each puts its name, the gateway its
    URL) and return the gateway's URL, if one started. A service task that ends first raises its error
    (else ``TrigReasonError`` code ``service_start``)."""
    gateway_url = None
    for _ in range(count):
        getter = asyncio.ensure_future(ready.get())
        try:
            done, _pending = await asyncio.wait([getter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter not in done:
            for t in done:
                t.result()  # a service died while starting: raise its error
            raise TrigReasonError("a service stopped while starting", code="service_start")
        item = getter.result()
        if item.startswith("http://"):
            gateway_url = item
    return gateway_url


@contextlib.asynccontextmanager
async def embedded_stack(
    spec: StackSpec,
    *,
    tracer_provider: TracerProvider,
    env: Mapping[str, str] | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> AsyncIterator[RunningStack]:
    """Start what ``spec`` does not point at, run every service as a task, tear all of it down after.
    ``env`` (default ``os.environ``): the ``TRIGREASON_*`` settings, as ``trigreason serve`` reads them."""
    env = dict(os.environ if env is None else env)
    ServiceSettings.from_env(env)  # a bad setting fails here, before anything starts
    backend_settings = BackendSettings.from_env(env)  # TRIGREASON_BACKEND_*, as `serve srm-worker` reads them
    procs: list[subprocess.Popen[bytes]] = []
    nats_server: LocalNatsServer | None = None
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    drain_s = _DRAIN_S
    try:
        nats_url = spec.nats_url
        if nats_url is None:
            nats_server = LocalNatsServer()
            await nats_server.start()
            nats_url = nats_server.url
            say(f"started nats-server with JetStream on {nats_url}")
        urls = await _start_inference_servers(spec, procs, say)

        async def backend_factory(role: Role) -> Backend:
            return await make_backend(urls[role], settings=backend_settings)

        settings = service_settings(spec, env, nats_url=nats_url, local_nats=nats_server is not None)
        drain_s = settings.host.drain_s
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
        gateway_url = await services_ready(ready, tasks, len(names))
        say("services up: " + ", ".join(names))
        yield RunningStack(
            nats_url=nats_url, srm_url=urls["srm"], lrm_url=urls["lrm"], gateway_url=gateway_url
        )
    finally:
        stop.set()
        if tasks:
            # Each service drains for settings.host.drain_s, then closes within a bound of its own
            # (run_service); this outer bound only guards against a service that ignores both.
            _done, pending = await asyncio.wait(tasks, timeout=drain_s + 6.0)
            for task in pending:
                task.cancel()
            await asyncio.wait(tasks, timeout=1.0)
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a service's late error is not "never retrieved" noise
        # The backends and NATS together: no service uses either any more.
        await asyncio.gather(
            stop_processes(procs, timeout_s=_CHILD_STOP_S),
            *([nats_server.stop(timeout_s=_CHILD_STOP_S)] if nats_server is not None else []),
        )
