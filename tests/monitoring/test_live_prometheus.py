"""A real Prometheus (Debian's package) scrapes the process cluster (tests/monitoring/cluster.py: a real
nats-server, every service as its own process, two load-simulator replicas) while sessions run. Then every
query of every dashboard panel, every recording rule and every alert expression must return data (a
failure names the dashboard, panel and query), Prometheus must have evaluated every rule without error,
every metric scraped must be documented (and every one documented scraped), and the session histograms
must carry trace ids as exemplars (Prometheus scrapes OpenMetrics).

Failing and hesitant simulators make redeliveries, backend errors and triggers; a malformed command makes
a dead letter and an unknown parameter a 4xx: each panel then has something to show."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import nats
import pytest

from tests.monitoring.cluster import SITE, finished, monitored_cluster, query
from tests.monitoring.support import (
    alerts,
    binary,
    documented_metrics,
    expand,
    panel_queries,
    recordings,
)
from trigreason.proto import command_subject

pytestmark = pytest.mark.slow

POLICIES = ("trigreason", "trigreason", "trigreason", "specreason", "lrm-only", "srm-only")
SESSIONS = 12
# A comparison filters series; with ``bool`` it keeps every series (0 or 1), so an alert's expression
# returns data whenever the series it reads exist, firing or not.
_SUFFIX = re.compile(r"_(bucket|count|sum)$")
_COMPARISON = re.compile(r"(\s)(>=|<=|==|!=|>|<)(\s)(?!bool\b)")


def as_bool(expr: str) -> str:
    return _COMPARISON.sub(r"\1\2 bool\3", expr)


def test_as_bool_keeps_every_series() -> None:
    assert as_bool("a > 0.05") == "a > bool 0.05"
    assert as_bool("a > (14.4 * 0.01)\n  and b == 0") == "a > bool (14.4 * 0.01)\n  and b == bool 0"
    assert as_bool('x{consumer!="t"} > 50') == 'x{consumer!="t"} > bool 50'


async def test_every_panel_and_rule_returns_data_from_the_running_cluster(tmp_path: Path) -> None:
    async with monitored_cluster(tmp_path, binary("prometheus")) as cluster:
        http, prom, gateway = cluster.http, cluster.prom, cluster.gateway
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
        async with http.post(f"{gateway}/v1/sessions", json={"question": "q", "params": {"nope": 1}}) as resp:
            assert resp.status == 422
        nc = await nats.connect(cluster.nats_url)
        try:
            await nc.jetstream().publish(command_subject("srm"), b"\x00 not a command")
        finally:
            await nc.close()
        ends = [await finished(http, gateway, sid) for sid in sids]
        assert "finished" in ends
        # Scrapes and rule evaluations (every 1 s) see the end state, lag gauges (every 5 s) included.
        await asyncio.sleep(8)
        cluster.check()

        # Data on the site the services named.
        assert await query(http, prom, f'trigreason_sessions_started_total{{site="{SITE}"}}')
        failures: list[str] = []
        for board, panel, expr in panel_queries():
            if not await query(http, prom, expand(expr)):
                failures.append(f"dashboard {board!r}, panel {panel!r}: {expr}")
        for rule in recordings():
            if not await query(http, prom, rule["record"]):
                failures.append(f"recording rule {rule['record']}: {rule['expr']}")
        for rule in alerts():
            if not await query(http, prom, as_bool(rule["expr"])):
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
            _SUFFIX.sub("", n) for n in names if n.startswith("trigreason_") and not n.endswith("_created")
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
