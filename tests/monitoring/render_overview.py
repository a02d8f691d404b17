"""A picture of the overview dashboard drawn from real data: the monitored process cluster
(tests/monitoring/cluster.py) runs sessions for a while, then every panel of the dashboard's JSON is
queried over that time from its Prometheus and drawn with matplotlib on the dashboard's own grid. Grafana
itself is not needed (nor available on the machines this project runs on); the queries, titles, units and
layout are the dashboard's.

    uv run --frozen --no-sync python -m tests.monitoring.render_overview docs/img/operations-overview.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from tests.monitoring.cluster import Monitored, finished, monitored_cluster
from tests.monitoring.support import DASHBOARDS, binary

POLICIES = ("trigreason", "trigreason", "trigreason", "specreason", "lrm-only", "srm-only", "random")
_BG, _PANEL, _TEXT, _GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
_COLORS = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0", "#37872d")


async def _client(cluster: Monitored, until: float, rng: random.Random) -> None:
    """Sessions one after another until ``until``; one in ten with a 1 s deadline (most of those fail)."""
    n = 0
    while time.monotonic() < until:
        n += 1
        params: dict[str, Any] = {"priming_steps": rng.choice((1, 2)), "max_tokens": 400}
        if rng.random() < 0.1:
            params["deadline_s"] = 1
        body = {
            "question": f"What is {n} * {rng.randint(2, 99)}?",
            "policy": rng.choice(POLICIES),
            "params": params,
        }
        async with cluster.http.post(f"{cluster.gateway}/v1/sessions", json=body) as resp:
            if resp.status != 202:
                raise RuntimeError(f"{body}: {resp.status} {await resp.text()}")
            sid = (await resp.json())["session_id"]
        with contextlib.suppress(AssertionError):  # a session that takes too long: the next one
            await finished(cluster.http, cluster.gateway, sid, timeout_s=60)
        await asyncio.sleep(rng.uniform(0.0, 1.0))


async def _range(
    cluster: Monitored, expr: str, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    async with cluster.http.post(
        f"{cluster.prom}/api/v1/query_range",
        data={"query": expr, "start": str(start), "end": str(end), "step": str(step)},
    ) as resp:
        body = await resp.json()
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _expand(expr: str, window_s: float) -> str:
    for macro, value in {
        "$__rate_interval": "15s",
        "$__range": f"{int(window_s)}s",
        "$namespace": ".*",
        "$site": ".*",
    }.items():
        expr = expr.replace(macro, value)
    return expr


def _legend(template: str, metric: dict[str, str]) -> str:
    out = template
    for key, value in metric.items():
        out = out.replace("{{" + key + "}}", value)
    return out.strip() or "value"


def _format(value: float, unit: str) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "currencyUSD":
        return f"${value:.4f}"
    if unit in ("reqps", "ops"):
        return f"{value:.2f}/s"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:.3g}"


async def render(out: Path, run_s: float, clients: int) -> None:
    board = json.loads((DASHBOARDS / "trigreason-overview.json").read_text())
    with tempfile.TemporaryDirectory(prefix="trig-render-") as work:
        async with monitored_cluster(Path(work), binary("prometheus")) as cluster:
            start = time.time()
            rng = random.Random(7)
            until = time.monotonic() + run_s
            await asyncio.gather(
                *(_client(cluster, until, random.Random(rng.random())) for _ in range(clients))
            )
            await asyncio.sleep(5)
            end = time.time()
            data: dict[int, list[tuple[str, list[dict[str, Any]]]]] = {}
            for panel in board["panels"]:
                if panel["type"] == "row":
                    continue
                data[panel["id"]] = [
                    (
                        t.get("legendFormat", ""),
                        await _range(cluster, _expand(t["expr"], end - start), start, end, 2),
                    )
                    for t in panel["targets"]
                ]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    unit_w, unit_h = 0.62, 0.42
    fig = plt.figure(figsize=(24 * unit_w, rows * unit_h + 0.6), facecolor=_BG)
    fig.text(0.01, 1 - 0.25 / (rows * unit_h + 0.6), board["title"], color=_TEXT, fontsize=15, va="top")
    height = rows * unit_h + 0.6
    for panel in board["panels"]:
        pos = panel["gridPos"]
        left = pos["x"] / 24 + 0.004
        width = pos["w"] / 24 - 0.008
        top = 1 - (0.6 + pos["y"] * unit_h) / height
        h = pos["h"] * unit_h / height
        if panel["type"] == "row":
            fig.text(left, top - h / 2, panel["title"], color=_TEXT, fontsize=12, weight="bold", va="center")
            continue
        # (room on the left for the value axis of a time series)
        inset = 0.0 if panel["type"] == "stat" else 0.028
        ax = fig.add_axes((left + inset, top - h + 0.012, width - inset, h - 0.035), facecolor=_PANEL)
        ax.set_title(panel["title"], color=_TEXT, fontsize=9, loc="left")
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        series = [(lf, s) for lf, result in data[panel["id"]] for s in result]
        for spine in ax.spines.values():
            spine.set_color(_GRID)
        if panel["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            values = [float(s["values"][-1][1]) for _, s in series if s["values"]]
            text = _format(values[0], unit) if values else "No data"
            ax.text(
                0.5,
                0.45,
                text,
                color="#73bf69",
                fontsize=22,
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            continue
        for i, (legend, s) in enumerate(series[:9]):
            xs = [(float(t) - start) / 60 for t, _ in s["values"]]
            ys = [float(v) for _, v in s["values"]]
            if unit == "percentunit":
                ys = [y * 100 for y in ys]
            ax.plot(
                xs, ys, color=_COLORS[i % len(_COLORS)], linewidth=1.2, label=_legend(legend, s["metric"])
            )
        ax.tick_params(colors=_TEXT, labelsize=7)
        ax.grid(color=_GRID, linewidth=0.5)
        ax.set_xlabel("minutes", color=_TEXT, fontsize=7)
        ylabel = {"percentunit": "%", "s": "seconds", "reqps": "per second", "ops": "per second"}.get(
            unit, ""
        )
        ax.set_ylabel(ylabel, color=_TEXT, fontsize=7)
        if series:
            ax.legend(
                fontsize=6, facecolor=_PANEL, edgecolor=_GRID, labelcolor=_TEXT, loc="upper left", ncol=3
            )
        else:
            ax.text(0.5, 0.5, "No data", color=_TEXT, ha="center", transform=ax.transAxes)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, facecolor=_BG)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=150.0, help="how long sessions run")
    parser.add_argument("--clients", type=int, default=4, help="sessions at once")
    args = parser.parse_args()
    asyncio.run(render(args.out, args.seconds, args.clients))


if __name__ == "__main__":
    main()
