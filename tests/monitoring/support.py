"""Where the monitoring files live, and Debian's Prometheus binaries (``make prometheus`` installs them)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "k8s" / "trigreason"
RULES = CHART / "rules" / "trigreason-rules.yaml"
DASHBOARDS = CHART / "dashboards"
RULES_TEST = Path(__file__).parent / "rules-test.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"


def binary(name: str) -> str:
    """The path of ``promtool`` or ``prometheus``. Missing: a skip that says how to get it, except on CI
    (``CI`` set), where ``make test`` has installed it and its absence is a failure."""
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found: `make prometheus` installs Debian's prometheus package (apt-get, as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def recordings() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "record" in rule]


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard of the chart, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's panels, those inside rows included (rows themselves are not)."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            out += panel.get("panels", [])
        else:
            out.append(panel)
    return out


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard title, panel title, PromQL) of every query of every panel."""
    return [
        (board["title"], panel["title"], target["expr"])
        for board in dashboards().values()
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


# Grafana's variables and its interval macros as Prometheus needs them in a direct query: every site and
# namespace, and a rate window that covers several 1 s scrapes.
_MACROS = {
    "${datasource}": "",
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$namespace": ".*",
    "$site": ".*",
}


def expand(expr: str) -> str:
    for macro, value in _MACROS.items():
        expr = expr.replace(macro, value)
    return expr


def documented_metrics() -> set[str]:
    """The metric names docs/operations.md's "Metrics" section lists (the CPU server's own excepted)."""
    section = OPERATIONS.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"`(trigreason_[a-z_]+)`", section))
    return {n for n in names if not n.startswith("trigreason_tgi_cpu_")}
