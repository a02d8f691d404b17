"""A real Prometheus (Debian's package) scrapes the process cluster while sessions run: a real nats-server,
every service as its own process (``trigreason serve``), two load-simulator replicas behind both roles.
Then every query of every dashboard panel, every recording rule and every alert expression must return
data (a failure names the dashboard, panel and query), Prometheus must have evaluated every rule without
error, and the session histograms must carry trace ids as exemplars (Prometheus scrapes OpenMetrics).

The simulators fail 30% of generations and the workers try one replica per delivery, so redeliveries,
backend errors and retries happen; hesitant SRM steps make triggers fire; a malformed command makes a
dead letter and an unknown parameter a 4xx: each panel then has something to show."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import yaml

from tests.monitoring.support import (
    RULES,
    alerts,
    binary,
    documented_metrics,
    expand,
    panel_queries,
    recordings,
)
from trigreason.nats_server import LocalNatsServer
from trigreason.proto import command_subject
from trigreason.services.backend_sim import SimSettings, StepLength, make_app, start_server

pytestmark = pytest.mark.slow

SITE = "test-site"
SERVICES = ("orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker", "gateway")
POLICIES = ("trigreason", "trigreason", "trigreason", "specreason", "lrm-only", "srm-only")
SESSIONS = 12
# A comparison filters series; with ``bool`` it keeps every series (0 or 1), so an alert's expression
# returns data whenever the series it reads exist, firing or not.
_SUFFIX = re.compile(r"_(bucket|count|sum)$")
_COMPARISON = re.compile(r"(\s)(>=|<=|==|!=|>|<)(\s)(?!bool\b)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def as_bool(expr: str) -> str:
    return _COMPARISON.sub(r"\1\2 bool\3", expr)


def test_as_bool_keeps_every_series() -> None:
    assert as_bool("a > 0.05") == "a > bool 0.05"
    assert as_bool("a > (14.4 * 0.01)\n  and b == 0") == "a > bool (14.4 * 0.01)\n  and b == bool 0"
    assert as_bool('x{consumer!="t"} > 50') == 'x{consumer!="t"} > bool 50'


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


async def _query(http: aiohttp.ClientSession, prom: str, expr: str) -> list[dict[str, Any]]:
    async with http.post(f"{prom}/api/v1/query", data={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def _finished(http: aiohttp.ClientSession, gateway: str, sid: str, timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with http.get(f"{gateway}/v1/sessions/{sid}") as resp:
            if resp.status == 200:
                view = await resp.json()
                if view.get("status") in ("finished", "failed"):
                    return str(view["status"])
        await asyncio.sleep(0.5)
    raise AssertionError(f"session {sid} did not end in {timeout_s:.0f} s")


async def test_every_panel_and_rule_returns_data_from_the_running_cluster(tmp_path: Path) -> None:
    prometheus = binary("prometheus")
    ports = {name: _free_port() for name in SERVICES}
    prom_port = _free_port()
    async with LocalNatsServer() as server, _simulators() as sims, aiohttp.ClientSession() as http:
        with _processes(tmp_path) as procs:
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
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": f"trigreason-{name}", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                    for name, port in ports.items()
                ],
            }
            (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
            procs.start(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
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

            # Sessions over HTTP, a 4xx, and a command nobody can decode (a dead letter).
            sids = []
            for i in range(SESSIONS):
                body = {
                    "question": f"What is {i} + {i}?",
                    "policy": POLICIES[i % len(POLICIES)],
                    "params": {"priming_steps": 1, "max_tokens": 400},
                }
                async with http.post(f"{gateway}/v1/sessions", json=body) as resp:
                    assert resp.status == 202, await resp.text()
                    sids.append((await resp.json())["session_id"])
            async with http.post(
                f"{gateway}/v1/sessions", json={"question": "q", "params": {"nope": 1}}
            ) as resp:
                assert resp.status == 422
            nc = await nats.connect(server.url)
            try:
                await nc.jetstream().publish(command_subject("srm"), b"\x00 not a command")
            finally:
                await nc.close()
            ends = [await _finished(http, gateway, sid) for sid in sids]
            assert "finished" in ends
            # Scrapes and rule evaluations (every 1 s) see the end state, lag gauges (every 5 s) included.
            await asyncio.sleep(8)
            procs.check()

            # Data on the site the services named.
            assert await _query(http, prom, f'trigreason_sessions_started_total{{site="{SITE}"}}')
            failures: list[str] = []
            for board, panel, expr in panel_queries():
                if not await _query(http, prom, expand(expr)):
                    failures.append(f"dashboard {board!r}, panel {panel!r}: {expr}")
            for rule in recordings():
                if not await _query(http, prom, rule["record"]):
                    failures.append(f"recording rule {rule['record']}: {rule['expr']}")
            for rule in alerts():
                if not await _query(http, prom, as_bool(rule["expr"])):
                    failures.append(f"alert {rule['alert']}: {rule['expr']}")
            assert not failures, "no data for:\n" + "\n".join(failures)

            # Prometheus evaluated every rule, without an error.
            async with http.get(f"{prom}/api/v1/rules") as resp:
                groups = (await resp.json())["data"]["groups"]
            evaluated = [r for g in groups for r in g["rules"]]
            assert len(evaluated) == len(recordings()) + len(alerts())
            assert [r["name"] for r in evaluated if r["health"] != "ok"] == []

            # Every metric scraped is documented in docs/operations.md, and every one documented was scraped.
            async with http.get(f"{prom}/api/v1/label/__name__/values") as resp:
                names = (await resp.json())["data"]
            # (``_created`` series are the counters' and histograms' start times, not metrics of their own)
            scraped = {
                _SUFFIX.sub("", n)
                for n in names
                if n.startswith("trigreason_") and not n.endswith("_created")
            }
            assert scraped == documented_metrics(), "scraped (+) against documented (-)"

            # The first-step histogram's exemplars are trace ids (OpenMetrics scrape).
            now = time.time()
            async with http.get(
                f"{prom}/api/v1/query_exemplars",
                params={
                    "query": "trigreason_session_first_step_seconds_bucket",
                    "start": str(now - 600),
                    "end": str(now),
                },
            ) as resp:
                data = (await resp.json())["data"]
            exemplars = [e for series in data for e in series["exemplars"]]
            assert exemplars, "no exemplars on trigreason_session_first_step_seconds_bucket"
            assert all(re.fullmatch(r"[0-9a-f]{32}", e["labels"]["trace_id"]) for e in exemplars)
