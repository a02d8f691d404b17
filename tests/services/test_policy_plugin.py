"""A policy defined here, in the test suite, and nowhere else: loaded by name from
``TRIGREASON_POLICY_MODULES``, it is listed and replayed by the CLI, validated and run by the gateway and
the cluster, and evaluated by ``trigreason eval`` through that gateway. No other file names it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all
from tests.support import step
from trigreason.services.gateway import GatewaySettings, make_app
from trigreason.services.runtime import Bus
from trigreason.services.trigger_evaluator.policies import POLICY_MODULES_ENV, Policy, SrmStep, StepVerdict

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
NAME = "every-nth"


class EveryNthParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    priming_steps: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    period: Annotated[int, msgspec.Meta(ge=1, le=100)] = 2


def _every_nth(srm: SrmStep, p: EveryNthParams) -> StepVerdict:
    """The LRM rewrites every period-th SRM step (step indices 1, 1 + period, ...)."""
    replace = srm.index % p.period == 1 % p.period
    return StepVerdict(replace=replace, lrm_steps=1, reason="every_nth" if replace else None)


POLICY = Policy(
    name=NAME,
    params=EveryNthParams,
    summary="test policy: the LRM rewrites every period-th SRM step",
    description="Defined in tests/services/test_policy_plugin.py only.",
    primes=True,
    on_step=_every_nth,
    triggers=("every_nth",),
    param_help={"period": "replace every period-th SRM step"},
)


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment that loads this module's policy, here (services built after it) and in children."""
    monkeypatch.setenv(POLICY_MODULES_ENV, __name__)
    return {**os.environ, POLICY_MODULES_ENV: __name__, "PYTHONPATH": str(ROOT)}


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trigreason", *args],
        input=stdin, capture_output=True, text=True, env=env, cwd=ROOT, timeout=90,
    )  # fmt: skip


def test_the_cli_lists_and_replays_it(plugin: dict[str, str]) -> None:
    listed = _cli(plugin, "policies", "--json")
    assert listed.returncode == 0, listed.stderr
    (info,) = [p for p in json.loads(listed.stdout)["policies"] if p["name"] == NAME]
    assert info["triggers"] == ["priming", "every_nth"]
    assert {p["name"]: (p["default"], p["schema"]["maximum"]) for p in info["params"]} == {
        "priming_steps": (0, 10),
        "period": (2, 100),
    }
    steps = "".join(json.dumps({"text": f"s{i}", "token_logprobs": [-1.0]}) + "\n" for i in range(5))
    replayed = _cli(plugin, "triggers", "replay", "-", "--policy", NAME, "--period", "3", stdin=steps)
    assert replayed.returncode == 0, replayed.stderr
    assert [json.loads(line)["verdict"] for line in replayed.stdout.splitlines()] == [
        "accept", "every_nth", "accept", "accept", "every_nth",
    ]  # fmt: skip
    bad = _cli(plugin, "triggers", "replay", "-", "--policy", NAME, "--period", "0", stdin=steps)
    assert bad.returncode == 2
    assert "period" in bad.stderr
    # Without the module the name is not a choice.
    gone = _cli({k: v for k, v in plugin.items() if k != POLICY_MODULES_ENV}, "policies", "--json")
    assert NAME not in [p["name"] for p in json.loads(gone.stdout)["policies"]]


@pytest.fixture
async def gateway(plugin: dict[str, str], cluster: Cluster) -> AsyncIterator[str]:
    final = step("So \\boxed{7}.")
    await start_all(
        cluster,
        ScriptedBackend("srm", default=step("We add.")),
        ScriptedBackend("lrm", steps=[step("Add 3 and 4.")], default=final),
    )
    bus = await Bus.connect(cluster.settings, name="gateway")
    app = make_app(bus, GatewaySettings(session_timeout_s=20.0))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()
    await bus.close()


async def _events(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with http.get(url) as resp:
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


async def test_the_gateway_validates_and_the_cluster_runs_it(gateway: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway}/v1/models") as resp:
            assert NAME in [m["id"] for m in (await resp.json())["data"]]
        async with http.get(f"{gateway}/openapi.json") as resp:
            doc = await resp.json()
            assert NAME in json.dumps(doc["components"]["schemas"]["RequestParams"])
            assert "EveryNthParams" in doc["components"]["schemas"]
        bad = {"question": "What is 3 + 4?", "policy": NAME, "params": {"perod": 2}}
        async with http.post(f"{gateway}/v1/sessions", json=bad) as resp:
            assert resp.status == 422
            assert "did you mean 'period'" in (await resp.json())["error"]["message"]
        body = {"question": "What is 3 + 4?", "policy": NAME, "params": {"period": 2, "priming_steps": 0}}
        async with http.post(f"{gateway}/v1/sessions", json=body) as resp:
            assert resp.status == 202, await resp.text()
            sid = (await resp.json())["session_id"]
        events = await _events(http, f"{gateway}/v1/sessions/{sid}/events")
    committed = [(e["role"], e["trigger"]) for e in events if e.get("type") == "StepCommitted.v1"]
    # Period 2: the SRM's steps 1 and 3 are replaced; the LRM's second step is the answer.
    assert committed == [("srm", None), ("lrm", "every_nth"), ("srm", None), ("lrm", "every_nth")]
    assert events[-1]["type"] == "SessionFinished.v1"
    assert events[-1]["stats"]["triggers"] == {"every_nth": 2}


async def test_eval_runs_it_through_the_gateway(gateway: str, plugin: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "What is 3 + 4?", "answer": "7"}) + "\n")
    out = tmp_path / "eval"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trigreason", "eval", "--via", gateway, "--dataset", str(data),
        "--policies", f"{NAME},lrm-only", "--period", "2", "--out", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=plugin, cwd=ROOT,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 110)
    assert proc.returncode == 0, err.decode()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["policies"]) == {NAME, "lrm-only"}
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    (mine,) = [r for r in rows if r["policy"] == NAME]
    assert mine["correct"] is True, json.dumps(mine)
    assert set(mine["stats"]["triggers"]) == {"every_nth"}
