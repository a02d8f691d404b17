"""The compose stack's Prometheus and Grafana: Prometheus' configuration passes ``promtool check config``
with the rule file it mounts, it scrapes every service at the port compose serves metrics on, and Grafana
is provisioned with the chart's dashboards and a default Prometheus data source."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.monitoring.support import DASHBOARDS, ROOT, RULES, binary

INFRA = ROOT / "infra"
COMPOSE: dict[str, Any] = yaml.safe_load((INFRA / "compose.yaml").read_text())
PROMETHEUS_YML = INFRA / "monitoring" / "prometheus.yml"
SERVICES = ("gateway", "orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker")


def _mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts."""
    out = {}
    for volume in COMPOSE["services"][service]["volumes"]:
        host, container, *_ = volume.split(":")
        if host.startswith("."):
            out[container] = (INFRA / host).resolve()
    return out


def test_promtool_checks_the_compose_prometheus_config(tmp_path: Path) -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    mounts = _mounts("prometheus")
    # The rule files named in the config are the chart's, through the mount.
    for rule_file in config["rule_files"]:
        directory, name = rule_file.rsplit("/", 1)
        assert mounts[directory] / name == RULES
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_YML
    config["rule_files"] = [str(RULES)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [binary("promtool"), "check", "config", str(local)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_service_is_scraped_where_it_serves_metrics() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    for service in SERVICES:
        env = COMPOSE["services"][service]["environment"]
        port = env.get("TRIGREASON_PORT") if service == "gateway" else env["TRIGREASON_METRICS_PORT"]
        assert targets[f"trigreason-{service}"] == [f"{service}:{port}"]


def test_grafana_is_provisioned_with_the_dashboards() -> None:
    mounts = _mounts("grafana")
    provisioning = mounts["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "trigreason.yaml").read_text())["providers"]
    (provider,) = providers
    assert mounts[provider["options"]["path"]] == DASHBOARDS
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    home = COMPOSE["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    directory, name = home.rsplit("/", 1)
    assert (mounts[directory] / name).exists()
