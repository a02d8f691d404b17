"""The Helm chart, rendered offline by Helm's own engine (helm-python-sdk binds Helm v4's Go SDK), every
manifest validated against the Kubernetes schemas (kubernetes-validate) and the ScaledObject against KEDA's
CRD schema (vendored in tests/deploy/schemas). No cluster, no network.

The NATS chart is a dependency that `helm dependency update` fetches; here it is absent, so its manifests
are not rendered, but the chart's own manifests are, in every configuration.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.deploy.nats_auth import ROOT
from tests.deploy.service_images import IMAGES
from trigreason.host import SERVICES
from trigreason.proto import CONSUMERS, inbox_prefix
from trigreason.services.trigger_evaluator.policies import SpecReasonParams

CHART = ROOT / "k8s" / "trigreason"
CI = CHART / "ci"
KUBE_VERSION = "1.30"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "keda-scaledobject-v1alpha1.json").read_text())
RELEASE, NAMESPACE = "trig", "reasoning"
FULL = f"{RELEASE}-trigreason"

Manifest = dict[str, Any]


def _values(name: str) -> dict[str, Any]:
    if name == "defaults":
        return {}
    loaded: dict[str, Any] = yaml.safe_load((CI / f"{name}-values.yaml").read_text())
    return loaded


VALUE_FILES = ["defaults", *sorted(p.name.removesuffix("-values.yaml") for p in CI.glob("*-values.yaml"))]


def render(values: dict[str, Any]) -> list[Manifest]:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[Manifest] = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def notes(values: dict[str, Any]) -> str:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)["trigreason/templates/NOTES.txt"]


def by_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _strict(schema: Any) -> Any:
    """``kubectl apply --validate=strict``: an object's unknown fields are errors, as kubernetes-validate's
    strict mode does for built-in kinds."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


KEDA_STRICT = _strict(KEDA_SCHEMA)


# The Prometheus operator's CRDs (PrometheusRule, ServiceMonitor, PodMonitor), strict as KEDA's.
MONITORING_STRICT = {
    kind: _strict(
        json.loads((Path(__file__).parent / "schemas" / f"monitoring-{kind.lower()}-v1.json").read_text())
    )
    for kind in ("PrometheusRule", "ServiceMonitor", "PodMonitor")
}


def validate(doc: Manifest) -> None:
    if doc["apiVersion"] == "keda.sh/v1alpha1":
        jsonschema.validate(doc, KEDA_STRICT)
    elif doc["apiVersion"] == "monitoring.coreos.com/v1":
        jsonschema.validate(doc, MONITORING_STRICT[doc["kind"]])
    else:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def _env(container: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture(scope="module", params=VALUE_FILES)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    return request.param, render(_values(request.param))


def test_every_manifest_is_valid_against_the_kubernetes_and_keda_schemas(
    rendered: tuple[str, list[Manifest]],
) -> None:
    _, docs = rendered
    assert docs
    for doc in docs:
        validate(doc)
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


IMAGE_OF = {
    "gateway": ("trigreason-gateway", None),
    "orchestrator": ("trigreason-orchestrator", None),
    "trigger-evaluator": ("trigreason-trigger-evaluator", None),
    "srm-worker": ("trigreason-worker", ["srm"]),
    "lrm-worker": ("trigreason-worker", ["lrm"]),
}


@pytest.mark.parametrize(
    ("image_values", "prefix", "tag"),
    [
        ({}, "ghcr.io/trigreason/", None),
        ({"registry": "registry.local:5000/team", "tag": "v7"}, "registry.local:5000/team/", "v7"),
        ({"registry": "", "tag": "dev"}, "", "dev"),
    ],
)
def test_each_service_runs_its_own_image(image_values: dict[str, str], prefix: str, tag: str | None) -> None:
    """Per-service images (the Dockerfile's targets); the worker image serves both roles, by argument; the
    others run their image's entry point (python -m trigreason.services.<service>) without arguments."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    deployments = by_kind(render({"image": image_values, "logLevel": "DEBUG"}), "Deployment")
    assert set(IMAGE_OF) == set(SERVICES)
    targets = {image.name for image in IMAGES}
    for service, (name, args) in IMAGE_OF.items():
        (c,) = deployments[f"{FULL}-{service}"]["spec"]["template"]["spec"]["containers"]
        assert name in targets
        assert c["image"] == f"{prefix}{name}:{tag or chart['appVersion']}"
        assert c.get("args") == args
        assert "command" not in c
        assert _env(c)["TRIGREASON_LOG_LEVEL"] == "DEBUG"


def test_the_validators_catch_mistakes() -> None:
    """The checks above can fail: a typo in a Deployment and in a ScaledObject is caught."""
    docs = render({})
    deployment = copy.deepcopy(by_kind(docs, "Deployment")[f"{FULL}-srm-worker"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(by_kind(docs, "ScaledObject")[f"{FULL}-srm-worker"])
    scaled["spec"]["minReplicas"] = 1  # KEDA calls it minReplicaCount
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    scaled = copy.deepcopy(by_kind(docs, "ScaledObject")[f"{FULL}-srm-worker"])
    del scaled["spec"]["scaleTargetRef"]
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def test_a_deployment_per_service_with_its_own_nats_user(rendered: tuple[str, list[Manifest]]) -> None:
    name, docs = rendered
    values = _values(name)
    deployments = by_kind(docs, "Deployment")
    secret = values.get("natsAuth", {}).get("secretName", "trigreason-nats-auth")
    for service in SERVICES:
        d = deployments[f"{FULL}-{service}"]
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = _env(c)
        assert env["TRIGREASON_NATS_USER"] == service
        assert env["TRIGREASON_NATS_PASSWORD"] == {"secretKeyRef": {"name": secret, "key": service}}
        assert env["TRIGREASON_NATS_INBOX_PREFIX"] == inbox_prefix(service)
        assert env["TRIGREASON_HOST"] == "0.0.0.0"
        # Probes on the port the service serves them on (_host.py: the metrics port; the gateway: HTTP).
        port = c["ports"][0]["containerPort"]
        assert env["TRIGREASON_PORT" if service == "gateway" else "TRIGREASON_METRICS_PORT"] == str(port)
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert c["resources"]["requests"]
        assert c["resources"]["limits"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert (
            d["spec"]["selector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        )
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == {f"{FULL}-{s}" for s in SERVICES}
    for pdb_name, pdb in pdbs.items():
        target = deployments[pdb_name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= target.items()
    assert by_kind(docs, "Service")[f"{FULL}-gateway"]["spec"]["ports"][0]["targetPort"] == "http"


def test_srm_workers_scale_on_their_consumer_with_keda_or_on_cpu(
    rendered: tuple[str, list[Manifest]],
) -> None:
    name, docs = rendered
    srm = f"{FULL}-srm-worker"
    deployment = by_kind(docs, "Deployment")[srm]
    scaled, hpas = by_kind(docs, "ScaledObject"), by_kind(docs, "HorizontalPodAutoscaler")
    autoscaling = _values(name).get("srmWorker", {}).get("autoscaling", {})
    keda = autoscaling.get("keda", {}).get("enabled", True)
    hpa = autoscaling.get("hpa", {}).get("enabled", True)
    if keda:
        assert not hpas
        spec = scaled[srm]["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": srm}
        (trigger,) = spec["triggers"]
        consumer = CONSUMERS["srm-worker"]
        assert trigger["type"] == "nats-jetstream"
        assert trigger["metadata"]["stream"] == consumer.stream == "TRIG_CMD"
        assert trigger["metadata"]["consumer"] == consumer.durable
        assert trigger["metadata"]["account"] == "$G"
        endpoint = trigger["metadata"]["natsServerMonitoringEndpoint"]
        assert endpoint.endswith(":8222")
        assert "://" not in endpoint
        assert spec["minReplicaCount"] == autoscaling.get("minReplicas", 1)
        assert spec["maxReplicaCount"] == autoscaling.get("maxReplicas", 10)
        assert "replicas" not in deployment["spec"]  # KEDA owns the replica count
    elif hpa:
        assert not scaled
        spec = hpas[srm]["spec"]
        assert spec["scaleTargetRef"]["name"] == srm
        assert spec["metrics"][0]["resource"]["name"] == "cpu"
        assert "replicas" not in deployment["spec"]
    else:
        assert not scaled
        assert not hpas
        assert deployment["spec"]["replicas"] == _values(name)["srmWorker"]["replicas"]


DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
ROUTING_ENV = {
    "mode": "TRIGREASON_BACKEND_ROUTING",
    "loadFactor": "TRIGREASON_BACKEND_LOAD_FACTOR",
    "ejectAfter": "TRIGREASON_BACKEND_EJECT_AFTER",
    "ejectSeconds": "TRIGREASON_BACKEND_EJECT_S",
    "probeIntervalSeconds": "TRIGREASON_BACKEND_PROBE_INTERVAL_S",
    "resolveIntervalSeconds": "TRIGREASON_BACKEND_RESOLVE_INTERVAL_S",
}


def test_tgi_on_gpus_or_external_urls(rendered: tuple[str, list[Manifest]]) -> None:
    name, docs = rendered
    tgi = _values(name).get("tgi", {})
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    for role in ("srm", "lrm"):
        worker_env = _env(deployments[f"{FULL}-{role}-worker"]["spec"]["template"]["spec"]["containers"][0])
        external = tgi.get(role, {}).get("externalUrl")
        tgi_name = f"{FULL}-tgi-{role}"
        if external:
            assert tgi_name not in deployments
            assert not {tgi_name, f"{tgi_name}-headless"} & set(services)
            assert worker_env[f"TRIGREASON_{role.upper()}_URL"] == external
            continue
        deployment = deployments[tgi_name]
        replicas = tgi.get(role, {}).get("replicas", DEFAULTS["tgi"][role]["replicas"])
        assert deployment["spec"]["replicas"] == replicas
        server = deployment["spec"]["template"]["spec"]["containers"][0]
        assert server["resources"]["limits"]["nvidia.com/gpu"] >= 1
        (port,) = server["ports"]
        assert port["name"] == "http"
        assert server["args"][server["args"].index("--port") + 1] == str(port["containerPort"])
        # Only ready pods are in the headless Service's DNS answer.
        assert server["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        # Several pods: replaced one at a time, never more pods (GPUs) than replicas; one: Recreate.
        strategy = deployment["spec"]["strategy"]
        if replicas > 1:
            assert strategy["type"] == "RollingUpdate"
            assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
        else:
            assert strategy == {"type": "Recreate"}
        # The headless Service selects this role's TGI pods and nothing else.
        headless = services[f"{tgi_name}-headless"]["spec"]
        assert headless["clusterIP"] == "None"
        assert headless.get("publishNotReadyAddresses", False) is False
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert headless["selector"].items() <= labels.items()
        assert headless["selector"] == deployment["spec"]["selector"]["matchLabels"]
        for other, d in deployments.items():
            if other != tgi_name:
                assert not headless["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        assert headless["ports"][0]["port"] == port["containerPort"]
        # Workers connect to the pods themselves: the container's port, not the ClusterIP Service's 80.
        assert services[tgi_name]["spec"]["ports"][0]["port"] == 80  # kept for other clients
        assert worker_env[f"TRIGREASON_{role.upper()}_URL"] == (
            f"dns+http://{tgi_name}-headless.{NAMESPACE}.svc.cluster.local:{port['containerPort']}"
        )
    if not tgi:  # the paper's pair by default
        args = {
            role: deployments[f"{FULL}-tgi-{role}"]["spec"]["template"]["spec"]["containers"][0]["args"]
            for role in ("srm", "lrm")
        }
        assert args["srm"][1] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
        assert args["lrm"][1] == "Qwen/QwQ-32B"
        # The LRM judges SpecReason steps with the default top_n, which stock TGI refuses above 5.
        top_n = args["lrm"].index("--max-top-n-tokens") + 1
        assert int(args["lrm"][top_n]) >= SpecReasonParams().judge_top_n


def test_both_workers_get_the_routing_settings(rendered: tuple[str, list[Manifest]]) -> None:
    name, docs = rendered
    routing = {**DEFAULTS["backendRouting"], **_values(name).get("backendRouting", {})}
    assert set(routing) == set(ROUTING_ENV)
    deployments = by_kind(docs, "Deployment")
    for service in SERVICES:
        env = _env(deployments[f"{FULL}-{service}"]["spec"]["template"]["spec"]["containers"][0])
        if service not in ("srm-worker", "lrm-worker"):
            assert not set(ROUTING_ENV.values()) & set(env)
            continue
        assert env["TRIGREASON_BACKEND_ROUTING"] == routing["mode"]
        assert env["TRIGREASON_BACKEND_EJECT_AFTER"] == str(routing["ejectAfter"])  # an integer
        for key in ("loadFactor", "ejectSeconds", "probeIntervalSeconds", "resolveIntervalSeconds"):
            assert float(env[ROUTING_ENV[key]]) == routing[key]


def test_routing_defaults_are_the_workers_contract() -> None:
    assert DEFAULTS["backendRouting"] == {
        "mode": "affinity",
        "loadFactor": 1.25,
        "ejectAfter": 2,
        "ejectSeconds": 5,
        "probeIntervalSeconds": 2,
        "resolveIntervalSeconds": 10,
    }


@pytest.mark.parametrize(
    "url",
    [
        "http://srm.inference:8080",
        "http://10.0.0.7:8080,http://10.0.0.8:8080,https://srm.example.com",
        "dns+http://srm-headless.inference.svc.cluster.local:8080",
    ],
)
def test_external_urls_pass_through_as_lists_or_dns_names(url: str) -> None:
    values = {
        "tgi": {"srm": {"enabled": False, "externalUrl": url}},
        "backendRouting": {"mode": "round-robin", "loadFactor": 2},
    }
    docs = render(values)
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    srm = _env(deployments[f"{FULL}-srm-worker"]["spec"]["template"]["spec"]["containers"][0])
    assert srm["TRIGREASON_SRM_URL"] == url
    assert srm["TRIGREASON_BACKEND_ROUTING"] == "round-robin"
    assert float(srm["TRIGREASON_BACKEND_LOAD_FACTOR"]) == 2
    assert srm["TRIGREASON_BACKEND_EJECT_AFTER"] == "2"  # the rest of the block keeps its defaults
    assert not {f"{FULL}-tgi-srm", f"{FULL}-tgi-srm-headless"} & (set(deployments) | set(services))
    # The other role still runs on the chart's TGI.
    lrm = _env(deployments[f"{FULL}-lrm-worker"]["spec"]["template"]["spec"]["containers"][0])
    assert lrm["TRIGREASON_LRM_URL"].startswith(f"dns+http://{FULL}-tgi-lrm-headless.{NAMESPACE}.")
    for doc in docs:
        validate(doc)


def test_nats_bundled_or_external_with_passwords_from_a_secret(rendered: tuple[str, list[Manifest]]) -> None:
    name, docs = rendered
    values = _values(name)
    url = _env(by_kind(docs, "Deployment")[f"{FULL}-gateway"]["spec"]["template"]["spec"]["containers"][0])[
        "TRIGREASON_NATS_URL"
    ]
    secrets = by_kind(docs, "Secret")
    if values.get("nats", {}).get("enabled", True):
        assert url == f"nats://{RELEASE}-nats.{NAMESPACE}.svc:4222"
        (secret,) = secrets.values()
        assert secret["metadata"]["name"] == "trigreason-nats-auth"
        assert set(secret["data"]) == set(SERVICES)
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    else:
        assert url == values["natsUrl"]
        assert not secrets  # the user's own Secret


def test_notes_tell_how_to_reach_the_gateway() -> None:
    text = notes({})
    assert f"port-forward svc/{FULL}-gateway" in text
    assert "KEDA scales 1..10 replicas" in text
    assert "HPA on CPU" in notes(_values("keda-off"))
    assert f"SRM dns+http://{FULL}-tgi-srm-headless.{NAMESPACE}.svc.cluster.local:8080" in text
    assert "routing over each role's replicas: affinity" in text


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"bus": {"storage": "disk"}}, "/bus/storage"),
    ({"srmWorker": {"autoscaling": {"keda": {"lagThreshold": 0}}}}, "lagThreshold"),
    (
        {"srmWorker": {"autoscaling": {"keda": {"monitoringEndpoint": "http://nats:8222"}}}},
        "monitoringEndpoint",
    ),
    ({"tgi": {"srm": {"enabled": False}}}, "externalUrl"),
    ({"tgi": {"lrm": {"externalUrl": "lrm:8080"}}}, "externalUrl"),
    ({"tgi": {"lrm": {"externalUrl": "http://a:8080,lrm:8080"}}}, "externalUrl"),  # each one a URL
    ({"tgi": {"lrm": {"externalUrl": "http://a:8080, http://b:8080"}}}, "externalUrl"),
    ({"tgi": {"srm": {"externalUrl": "dns+http://srm-headless"}}}, "externalUrl"),  # the port is needed
    ({"tgi": {"srm": {"externalUrl": "dns+http://a:8080,dns+http://b:8080"}}}, "externalUrl"),
    ({"tgi": {"srm": {"replicas": -1}}}, "/tgi/srm/replicas"),
    ({"backendRouting": {"mode": "sticky"}}, "/backendRouting/mode"),
    ({"backendRouting": {"mode": "round_robin"}}, "/backendRouting/mode"),
    ({"backendRouting": {"loadFactor": 0.5}}, "/backendRouting/loadFactor"),  # below the mean
    ({"backendRouting": {"ejectAfter": 0}}, "/backendRouting/ejectAfter"),
    ({"backendRouting": {"ejectAfter": 1.5}}, "/backendRouting/ejectAfter"),
    ({"backendRouting": {"ejectSeconds": 0}}, "/backendRouting/ejectSeconds"),
    ({"backendRouting": {"probeIntervalSeconds": -1}}, "/backendRouting/probeIntervalSeconds"),
    ({"backendRouting": {"resolveIntervalSeconds": "10s"}}, "/backendRouting/resolveIntervalSeconds"),
    ({"backendRouting": {"stickiness": True}}, "stickiness"),
    ({"natsUrl": "http://nats:4222"}, "natsUrl"),
    ({"gateway": {"port": "8080"}}, "/gateway/port"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"image": {"registry": "ghcr.io/trigreason/"}}, "registry"),  # the names follow a slash already
    ({"orchestrator": {"replicas": -1}}, "/orchestrator/replicas"),
    ({"lrmWorker": {"concurrency": 0}}, "concurrency"),
    ({"logLevel": "LOUD"}, "logLevel"),
    ({"workers": 3}, "workers"),  # an unknown key: a typo is not silently ignored
    ({"nats": {"enabled": "yes"}}, "/nats/enabled"),
]


@pytest.mark.parametrize(("bad", "where"), BAD_VALUES)
def test_values_schema_rejects_bad_values(bad: dict[str, Any], where: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=where):
        chart.render(bad, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize("name", VALUE_FILES)
def test_values_schema_accepts_the_shipped_values(name: str) -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(_values(name))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nats": {"enabled": False}}, "set natsUrl"),
        (
            {"nats": {"enabled": False}, "natsUrl": "nats://n:4222"},
            "monitoringEndpoint",  # KEDA cannot find the bundled NATS's monitoring port
        ),
    ],
)
def test_inconsistent_settings_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError, match=message):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_lint_passes(tmp_path: Path) -> None:
    # As it is: the one finding may be the NATS dependency that `helm dependency update` fetches.
    result = helm.lint(CHART)
    assert not result["errors"]
    warnings = [m["error"] for m in result["messages"] if m["severity"] >= 2]
    assert warnings in ([], ["chart directory is missing these dependencies: nats"])
    # Strict (warnings are errors), in every configuration, on a copy without the dependency.
    copy_dir = tmp_path / "trigreason"
    shutil.copytree(CHART, copy_dir)
    meta = yaml.safe_load((copy_dir / "Chart.yaml").read_text())
    del meta["dependencies"]
    (copy_dir / "Chart.yaml").write_text(yaml.safe_dump(meta))
    for name in VALUE_FILES:
        result = helm.lint(copy_dir, _values(name), strict=True, namespace=NAMESPACE)
        assert not result["errors"], (name, result)
    broken = helm.lint(copy_dir, {"bus": {"storage": "disk"}}, strict=True)
    assert broken["errors"]  # and lint can fail
