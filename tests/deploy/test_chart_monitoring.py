"""The chart's monitoring objects, rendered by Helm's engine: the dashboards as ConfigMaps for Grafana's
sidecar (the repository's JSON, byte for byte), the rules as a PrometheusRule (the plain rule file's
groups), a ServiceMonitor or PodMonitor that reaches every component's metrics port, all off or on as the
values say, and every manifest valid against the Kubernetes and Prometheus operator schemas."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.deploy.test_chart import FULL, NAMESPACE, RELEASE, by_kind, render, validate
from tests.monitoring.support import DASHBOARDS, RULES

ALL_ON: dict[str, Any] = {
    "site": "edge-1",
    "monitoring": {
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True, "interval": "15s"},
    },
}
COMPONENTS = ("gateway", "orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker")


def test_defaults_install_the_dashboards_and_no_operator_objects() -> None:
    docs = render({})
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"PrometheusRule", "ServiceMonitor", "PodMonitor"}
    maps = {n: d for n, d in by_kind(docs, "ConfigMap").items() if n.endswith("-dashboard")}
    files = sorted(DASHBOARDS.glob("*.json"))
    assert len(maps) == len(files) == 4
    shipped = {key: value for d in maps.values() for key, value in d["data"].items()}
    for path in files:
        assert json.loads(shipped[path.name]) == json.loads(path.read_text())
    for d in maps.values():
        assert d["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert d["metadata"]["annotations"]["grafana_folder"] == "TrigReason"
        assert d["metadata"]["namespace"] == NAMESPACE


def test_dashboards_can_go_elsewhere_or_be_left_out() -> None:
    docs = render(
        {"monitoring": {"dashboards": {"namespace": "observability", "label": "dash", "folder": ""}}}
    )
    maps = [d for d in by_kind(docs, "ConfigMap").values() if d["metadata"]["name"].endswith("-dashboard")]
    assert {d["metadata"]["namespace"] for d in maps} == {"observability"}
    assert all(d["metadata"]["labels"]["dash"] == "1" and "annotations" not in d["metadata"] for d in maps)
    off = render({"monitoring": {"dashboards": {"enabled": False}}})
    assert not [d for d in off if d["metadata"]["name"].endswith("-dashboard")]


def test_the_prometheus_rule_is_the_rule_file() -> None:
    docs = render(ALL_ON)
    for doc in docs:
        validate(doc)
    rule = by_kind(docs, "PrometheusRule")[FULL]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    # Prometheus' own templates in annotations reach the operator untouched by Helm.
    annotations = [
        r["annotations"]["summary"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r
    ]
    assert any("{{ $labels.site }}" in a for a in annotations)


def test_service_and_pod_monitors_reach_every_component() -> None:
    docs = render(ALL_ON)
    services = by_kind(docs, "Service")
    scraped = {
        s["metadata"]["labels"]["app.kubernetes.io/component"]: s
        for s in services.values()
        if s["metadata"]["labels"].get("trigreason.io/metrics") == "true"
    }
    assert set(scraped) == set(COMPONENTS)
    deployments = by_kind(docs, "Deployment")
    monitor = by_kind(docs, "ServiceMonitor")[FULL]
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    for component, service in scraped.items():
        assert selector.items() <= service["metadata"]["labels"].items()
        # the Service's port name is one the monitor scrapes, and its target is a named container port
        (port,) = service["spec"]["ports"]
        assert port["name"] in ports
        container = deployments[f"{FULL}-{component}"]["spec"]["template"]["spec"]["containers"][0]
        assert port["targetPort"] in {p["name"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TRIGREASON_SITE"] == "edge-1"
    pods = by_kind(docs, "PodMonitor")[FULL]
    assert {e["port"] for e in pods["spec"]["podMetricsEndpoints"]} == {"metrics", "http"}
    assert {e["interval"] for e in pods["spec"]["podMetricsEndpoints"]} == {"15s"}
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pods["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels["app.kubernetes.io/instance"] == RELEASE


def test_the_orchestrator_prices_the_lrm() -> None:
    docs = render({"lrmPrices": {"inputUsdPerM": 3, "cachedInputUsdPerM": 0.3, "outputUsdPerM": 15}})
    container = by_kind(docs, "Deployment")[f"{FULL}-orchestrator"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRIGREASON_LRM_INPUT_USD_PER_M"] == "3"
    assert env["TRIGREASON_LRM_OUTPUT_USD_PER_M"] == "15"
    assert env["TRIGREASON_SITE"] == "default"
