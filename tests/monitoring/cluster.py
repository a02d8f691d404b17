"""The process cluster under a real Prometheus, for tests/monitoring (and the overview's picture): a real
nats-server, every service as its own process (``trigreason serve``), two load-simulator replicas behind
both roles (in this process), and Debian's ``prometheus`` scraping them all every second with the chart's
rule file loaded and exemplar storage on.

The simulators fail 30% of generations and the workers try one replica per delivery, so redeliveries,
backend errors and retries happen; half the SRM steps hesitate, so triggers fire."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.monitoring.support import RULES
from trigreason.nats_server import LocalNatsServer
from trigreason.services.backend_sim import SimSettings, StepLength, make_app, start_server

__all__ = ["SITE", "Monitored", "finished", "monitored_cluster", "query"]

SITE = "test-site"
SERVICES = ("orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker", "gateway")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Monitored:
    http: aiohttp.ClientSession
    prom: str  # Prometheus' base URL
    gateway: str
    nats_url: str
    check: Callable[[], None]  # raises if a process of the cluster has exited


class _Procs:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def _processes(logs: Path) -> Iterator[_Procs]:
    procs = _Procs(logs)
    try:
        yield procs
    finally:
        procs.stop()


@contextlib.asynccontextmanager
async def _simulators() -> AsyncIterator[list[str]]:
    settings = SimSettings(
        time_per_token_ms=1.0,
        step_tokens=StepLength("uniform", 8, 24),
        answer_after=4,
        answer_p=0.5,
        hesitation_p=0.5,
        error_rate=0.3,
        concurrency=8,
    )
    started = [await start_server(make_app(settings), host="127.0.0.1", port=0) for _ in range(2)]
    try:
        yield [url for _, url in started]
    finally:
        for runner, _ in started:
            await runner.cleanup()


async def _ready(http: aiohttp.ClientSession, url: str, procs: _Procs, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        procs.check()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status == 200:
                    return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready after {timeout_s:.0f} s")
        await asyncio.sleep(0.25)


async def query(http: aiohttp.ClientSession, prom: str, expr: str) -> list[dict[str, Any]]:
    async with http.post(f"{prom}/api/v1/query", data={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def finished(http: aiohttp.ClientSession, gateway: str, sid: str, timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with http.get(f"{gateway}/v1/sessions/{sid}") as resp:
            if resp.status == 200:
                view = await resp.json()
                if view.get("status") in ("finished", "failed"):
                    return str(view["status"])
        await asyncio.sleep(0.5)
    raise AssertionError(f"session {sid} did not end in {timeout_s:.0f} s")


@contextlib.asynccontextmanager
async def monitored_cluster(
    workdir: Path, prometheus: str, *, scrape_s: float = 1.0
) -> AsyncIterator[Monitored]:
    """The cluster and its Prometheus (binary ``prometheus``), logs and data under ``workdir``."""
    ports = {name: _free_port() for name in SERVICES}
    prom_port = _free_port()
    async with LocalNatsServer() as server, _simulators() as sims, aiohttp.ClientSession() as http:
        with _processes(workdir) as procs:
            env = {
                **os.environ,
                "TRIGREASON_NATS_URL": server.url,
                "TRIGREASON_SRM_URL": ",".join(sims),
                "TRIGREASON_LRM_URL": ",".join(sims),
                "TRIGREASON_HOST": "127.0.0.1",
                "TRIGREASON_SITE": SITE,
                "TRIGREASON_NATS_STORAGE": "memory",
                "TRIGREASON_RETRY_BACKOFF_S": "0.1",
                "TRIGREASON_MAX_DELIVER": "20",
                # One replica per delivery: a failed generation goes back to the bus (a redelivery).
                "TRIGREASON_BACKEND_MAX_ATTEMPTS": "1",
                "TRIGREASON_BACKEND_EJECT_AFTER": "1000",
                # Spans recorded (printed to a discarded stdout), so metrics get trace ids as exemplars.
                "TRIGREASON_TRACE_CONSOLE": "1",
                "OTEL_SDK_DISABLED": "false",
            }
            for name in SERVICES:
                port_var = "TRIGREASON_PORT" if name == "gateway" else "TRIGREASON_METRICS_PORT"
                argv = [sys.executable, "-m", "trigreason", "serve", name]
                procs.start(name, argv, {**env, port_var: str(ports[name])})
            config = {
                "global": {"scrape_interval": f"{scrape_s:g}s", "evaluation_interval": f"{scrape_s:g}s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": f"trigreason-{name}", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                    for name, port in ports.items()
                ],
            }
            (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
            procs.start(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--enable-feature=exemplar-storage",
                ],
                dict(os.environ),
            )
            prom = f"http://127.0.0.1:{prom_port}"
            gateway = f"http://127.0.0.1:{ports['gateway']}"
            for port in ports.values():
                await _ready(http, f"http://127.0.0.1:{port}/readyz", procs)
            await _ready(http, f"{prom}/-/ready", procs)
            yield Monitored(http=http, prom=prom, gateway=gateway, nats_url=server.url, check=procs.check)
            procs.check()
