"""Where the monitoring files live, and Debian's Prometheus binaries (``make prometheus`` installs them)."""

from __future__ import annotations

import os
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
