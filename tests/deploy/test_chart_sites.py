"""The chart's edge and cloud installs (k8s/trigreason/sites/*-values.yaml, docs/deploy.md "Edge and cloud"),
rendered offline like the rest of the chart (tests/deploy/test_chart.py) and validated against the
Kubernetes schemas: which services run where, the site and TLS settings every service gets, the NATS
server's leaf connection, domains and per-site accounts, and the values schema's refusals."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.deploy.test_chart import CHART, FULL, NAMESPACE, RELEASE, Manifest, by_kind, render, validate
from trigreason.host import SERVICES

SITES = CHART / "sites"
EDGE: dict[str, Any] = yaml.safe_load((SITES / "edge-values.yaml").read_text())
CLOUD: dict[str, Any] = yaml.safe_load((SITES / "cloud-values.yaml").read_text())
EDGE_SERVICES = {"gateway", "orchestrator", "trigger-evaluator", "srm-worker"}


def _env(d: Manifest) -> dict[str, Any]:
    (c,) = d["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def _deployments(docs: list[Manifest]) -> dict[str, Manifest]:
    return {
        name.removeprefix(f"{FULL}-"): d
        for name, d in by_kind(docs, "Deployment").items()
        if not name.startswith(f"{FULL}-tgi-")
    }


def _mounts(d: Manifest) -> dict[str, str]:
    (c,) = d["spec"]["template"]["spec"]["containers"]
    return {m["name"]: m["mountPath"] for m in c["volumeMounts"]}


def _secret_volumes(d: Manifest) -> dict[str, str]:
    return {
        v["name"]: v["secret"]["secretName"]
        for v in d["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }


def _tls_env_and_mounts(d: Manifest, handshake_first: bool) -> None:
    env = _env(d)
    assert env["TRIGREASON_NATS_TLS_CA"] == "/etc/trigreason/nats-tls/ca.crt"
    assert env["TRIGREASON_NATS_TLS_CERT"] == "/etc/trigreason/nats-tls/tls.crt"
    assert env["TRIGREASON_NATS_TLS_KEY"] == "/etc/trigreason/nats-tls/tls.key"
    assert env["TRIGREASON_NATS_TLS_HANDSHAKE_FIRST"] == str(handshake_first).lower()
    assert env["TRIGREASON_NATS_URL"] == f"tls://{RELEASE}-nats.{NAMESPACE}.svc:4222"
    assert _mounts(d)["nats-tls"] == "/etc/trigreason/nats-tls"
    assert _secret_volumes(d)["nats-tls"] == "trigreason-nats-tls"


def test_an_edge_install_runs_the_edge_services_on_its_leaf_node() -> None:
    docs = render(EDGE)
    for doc in docs:
        validate(doc)
    deployments = _deployments(docs)
    assert set(deployments) == EDGE_SERVICES
    assert f"{FULL}-tgi-lrm" not in by_kind(docs, "Deployment")  # the LRM's server is the cloud's
    assert f"{FULL}-tgi-srm" in by_kind(docs, "Deployment")
    assert f"{FULL}-gateway" in by_kind(docs, "Service")
    assert f"{FULL}-srm-worker" in by_kind(docs, "ScaledObject")
    assert set(by_kind(docs, "PodDisruptionBudget")) == {f"{FULL}-{s}" for s in EDGE_SERVICES}
    for d in deployments.values():
        env = _env(d)
        assert env["TRIGREASON_PLACEMENT"] == "edge"
        assert env["TRIGREASON_SITE"] == env["TRIGREASON_NATS_DOMAIN"] == EDGE["site"] == "edge-a"
        assert "TRIGREASON_EDGE_SITES" not in env
        _tls_env_and_mounts(d, handshake_first=True)


def test_the_edges_nats_is_a_leaf_node_with_its_own_domain_over_mutual_tls() -> None:
    config = EDGE["nats"]["config"]
    assert config["jetstream"]["merge"]["domain"] == EDGE["site"]
    assert config["nats"]["tls"]["merge"]["verify"] is True
    merged = config["merge"]
    assert merged["authorization"] is None  # accounts instead of the single-site users
    site = merged["accounts"]["SITE"]
    assert {u["user"] for u in site["users"]} == set(SERVICES)
    assert site["jetstream"] == "enabled"
    (remote,) = merged["leafnodes"]["remotes"]
    assert remote["account"] == "SITE"
    assert remote["urls"] == ["<< $LEAF_URL >>"]  # the hub URL with this site's leaf user, from a Secret
    assert set(remote["tls"]) == {"ca_file", "cert_file", "key_file", "handshake_first"}  # mutual TLS
    assert remote["tls"]["handshake_first"] is EDGE["natsTls"]["handshakeFirst"]
    assert (
        EDGE["nats"]["container"]["env"]["LEAF_URL"]["valueFrom"]["secretKeyRef"]["name"] == "trigreason-leaf"
    )
    # The edge dials out: it opens no leaf node port of its own.
    assert not config.get("leafnodes", {}).get("enabled", False)


def test_placement_2_runs_the_lrm_workers_at_the_edge_over_https() -> None:
    values = copy.deepcopy(EDGE)
    values["placement"]["lrmAtEdge"] = True
    values["tgi"] = {"lrm": {"enabled": False, "externalUrl": "https://lrm.cloud.example.com"}}
    values["backendTls"] = {"secretName": "trigreason-cloud-ca", "clientCertificate": True}
    docs = render(values)
    for doc in docs:
        validate(doc)
    deployments = _deployments(docs)
    assert set(deployments) == set(SERVICES)
    lrm = deployments["lrm-worker"]
    env = _env(lrm)
    assert env["TRIGREASON_LRM_URL"] == "https://lrm.cloud.example.com"
    assert env["TRIGREASON_BACKEND_TLS_CA"] == "/etc/trigreason/backend-tls/ca.crt"
    assert env["TRIGREASON_BACKEND_TLS_CERT"] == "/etc/trigreason/backend-tls/tls.crt"
    assert env["TRIGREASON_BACKEND_TLS_KEY"] == "/etc/trigreason/backend-tls/tls.key"
    assert _mounts(lrm)["backend-tls"] == "/etc/trigreason/backend-tls"
    assert _secret_volumes(lrm)["backend-tls"] == "trigreason-cloud-ca"
    # Only the workers get the inference servers' CA.
    assert "backend-tls" not in _mounts(deployments["gateway"])
    assert "TRIGREASON_BACKEND_TLS_CA" not in _env(deployments["orchestrator"])


def test_a_cloud_install_runs_the_lrm_pool_for_its_edge_sites() -> None:
    docs = render(CLOUD)
    for doc in docs:
        validate(doc)
    deployments = _deployments(docs)
    assert set(deployments) == {"lrm-worker"}
    assert deployments["lrm-worker"]["spec"]["replicas"] == 2
    assert f"{FULL}-tgi-lrm" in by_kind(docs, "Deployment")
    assert f"{FULL}-tgi-srm" not in by_kind(docs, "Deployment")
    assert f"{FULL}-gateway" not in by_kind(docs, "Service")
    assert not by_kind(docs, "ScaledObject")
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    env = _env(deployments["lrm-worker"])
    assert env["TRIGREASON_PLACEMENT"] == "cloud"
    assert env["TRIGREASON_NATS_DOMAIN"] == CLOUD["placement"]["cloudDomain"] == "cloud"
    assert env["TRIGREASON_EDGE_SITES"] == "edge-a,edge-b"
    assert env["TRIGREASON_SITE"] == "cloud"  # its metrics' site label
    _tls_env_and_mounts(deployments["lrm-worker"], handshake_first=True)


def test_the_hub_takes_each_sites_leaf_into_that_sites_own_account() -> None:
    config = CLOUD["nats"]["config"]
    assert config["jetstream"]["merge"]["domain"] == CLOUD["placement"]["cloudDomain"]
    leaf = config["leafnodes"]
    assert leaf["enabled"] is True
    assert leaf["tls"]["enabled"] is True
    assert leaf["tls"]["merge"]["verify"] is True  # mutual TLS on the leaf connections
    assert leaf["tls"]["merge"]["handshake_first"] is CLOUD["natsTls"]["handshakeFirst"]
    accounts = config["merge"]["accounts"]
    sites = CLOUD["placement"]["edgeSites"]
    assert set(accounts) == {"CLOUD", *(f"SITE_{s}" for s in sites)}
    assert [u["user"] for u in accounts["CLOUD"]["users"]] == ["lrm-worker"]
    imported = accounts["CLOUD"]["imports"]
    for site in sites:
        account = accounts[f"SITE_{site}"]
        assert [u["user"] for u in account["users"]] == [f"leaf-{site}"]
        exports = {next(iter(v for k, v in e.items() if k != "accounts")) for e in account["exports"]}
        assert exports == {f"$JS.{site}.API.>", f"trig.site.{site}.src.>", f"trig.site.{site}.evt.>"}
        for e in account["exports"]:
            assert e["accounts"] == ["CLOUD"]  # never another site
        from_site = {i[k]["subject"] for i in imported for k in i if i[k]["account"] == f"SITE_{site}"}
        assert from_site == exports
        env = CLOUD["nats"]["container"]["env"][f"LEAF_{site.upper().replace('-', '_')}_PASSWORD"]
        assert env["valueFrom"]["secretKeyRef"] == {"name": "trigreason-leaf-users", "key": site}


def test_the_notes_say_where_the_release_runs() -> None:
    from tests.deploy.test_chart import notes

    edge = notes(EDGE)
    assert "Site edge-a: edge, a leaf node of the cloud hub with JetStream domain edge-a" in edge
    assert "port-forward" in edge
    cloud = notes(CLOUD)
    assert "Site cloud: cloud, the hub (JetStream domain cloud)" in cloud
    assert "edge-a, edge-b" in cloud
    assert "port-forward" not in cloud  # no gateway in the cloud
    assert "SRM workers" not in cloud


BAD_SITES: list[tuple[dict[str, Any], str]] = [
    ({"placement": {"mode": "fog"}}, "mode"),
    ({"placement": {"mode": "edge"}}, "site"),  # an edge needs its own name (its domain), not "default"
    ({"placement": {"mode": "edge"}, "site": "Edge_A"}, "site"),  # not a domain name
    ({"placement": {"mode": "cloud"}}, "edgeSites"),
    ({"placement": {"mode": "cloud", "edgeSites": ["a", "a"]}}, "edgeSites"),
    ({"placement": {"region": "eu"}}, "region"),
    ({"natsTls": {"enabled": True}}, "secretName"),
    ({"backendTls": {"clientCertificate": True}}, "secretName"),
]


@pytest.mark.parametrize(("bad", "where"), BAD_SITES)
def test_the_schema_refuses_bad_site_values(bad: dict[str, Any], where: str) -> None:
    with pytest.raises(Exception, match=where):  # helm's own schema error type
        render(bad)
