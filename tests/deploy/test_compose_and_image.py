"""The compose stack (infra/compose.yaml) against the Compose Specification's JSON schema (the copy that
check-jsonschema ships), and the Dockerfile through hadolint. No Docker engine here: these are the checks
that run without one; docs/deploy.md has the walkthrough that runs the stack."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.nats_auth import ROOT
from tests.deploy.service_images import IMAGES
from trigreason.host import SERVICES
from trigreason.proto import inbox_prefix, password_variable
from trigreason.services.trigger_evaluator.policies import SpecReasonParams

COMPOSE = ROOT / "infra" / "compose.yaml"
EXAMPLE_ENV = ROOT / "infra" / "example.env"
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"

_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {k.strip(): v.strip() for k, v in (line.split("=", 1) for line in lines)}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return _VAR.sub(sub, value)


def compose_schema() -> dict[str, Any]:
    files = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(files.read_text())
    return schema


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text())
    loaded: dict[str, Any] = interpolate(raw, _env_file(EXAMPLE_ENV))
    return loaded


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors
    # and the check can fail
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["helthcheck"] = broken["services"]["gateway"].pop("healthcheck")
    broken["services"]["nats"]["depends_on"] = {"jaeger": {"condition": "when_ready"}}
    found = " ".join(e.message for e in validator.iter_errors(broken))
    assert "'helthcheck' was unexpected" in found
    assert "when_ready" in found


def test_the_passwords_must_be_set() -> None:
    with pytest.raises(KeyError, match="GATEWAY_NATS_PASSWORD"):
        interpolate(yaml.safe_load(COMPOSE.read_text()), {})


def test_every_container_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test, name
        assert test[0] == "CMD", name


def test_each_service_runs_as_its_own_nats_user(compose: dict[str, Any]) -> None:
    env = _env_file(EXAMPLE_ENV)
    services = compose["services"]
    for service in SERVICES:
        s = services[service]
        assert s["environment"]["TRIGREASON_NATS_USER"] == service
        assert s["environment"]["TRIGREASON_NATS_PASSWORD"] == env[password_variable(service)]
        assert s["environment"]["TRIGREASON_NATS_INBOX_PREFIX"] == inbox_prefix(service)
        assert s["environment"]["TRIGREASON_NATS_URL"] == "nats://nats:4222"
        assert s["depends_on"]["nats"] == {"condition": "service_healthy"}
        assert s["read_only"] is True
    # The server gets every password and mounts the configuration the permission tests run.
    nats = services["nats"]
    assert {password_variable(s) for s in SERVICES} <= set(nats["environment"])
    assert "./nats:/etc/nats:ro" in nats["volumes"]
    assert nats["command"][:2] == ["--config", "/etc/nats/nats.conf"]
    assert (COMPOSE.parent / "nats" / "nats.conf").read_text().count("include ./auth.conf") == 1


def test_gpu_and_cpu_profiles_serve_the_same_hostnames(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for role, model in (("srm", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"), ("lrm", "Qwen/QwQ-32B")):
        gpu, cpu = services[f"tgi-{role}"], services[f"tgi-cpu-{role}"]
        assert gpu["profiles"] == ["gpu"]
        assert cpu["profiles"] == ["cpu"]
        assert f"--model-id={model}" in gpu["command"]  # the paper's pair by default
        assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
        assert cpu["image"] == "trigreason-tgi-cpu:local"
        assert "command" not in cpu  # the image's entry point, configured by the environment
        assert cpu["environment"]["TRIGREASON_TGI_CPU_MODEL"] == role
        assert cpu["environment"]["TRIGREASON_TGI_CPU_PORT"] == "8080"
        assert gpu["networks"]["default"]["aliases"] == cpu["networks"]["default"]["aliases"] == [role]
        worker = services[f"{role}-worker"]
        assert worker["environment"][f"TRIGREASON_{role.upper()}_URL"] == f"http://{role}:8080"
        assert worker["depends_on"][f"tgi-{role}"]["required"] is False


def test_each_service_runs_its_own_image(compose: dict[str, Any]) -> None:
    """Per-service images, named trigreason-<Dockerfile target>:<tag>; the worker image serves both roles
    (its argument), the others run their image's entry point as it is."""
    services = compose["services"]
    targets = {image.target for image in IMAGES}
    expected = {
        "gateway": "gateway",
        "orchestrator": "orchestrator",
        "trigger-evaluator": "trigger-evaluator",
        "srm-worker": "worker",
        "lrm-worker": "worker",
        "tgi-cpu-srm": "tgi-cpu",
        "tgi-cpu-lrm": "tgi-cpu",
    }
    assert set(expected) >= set(SERVICES)
    built: dict[str, str] = {}
    for name, target in expected.items():
        s = services[name]
        assert target in targets
        assert s["image"] == f"trigreason-{target}:local", name
        if "build" in s:
            assert s["build"] == {"context": "..", "target": target}, name
            built[target] = name
        if target == "worker":
            assert s["command"] == [name.split("-")[0]]  # srm or lrm
        else:
            assert "command" not in s, name
    assert set(built) == set(expected.values())  # every image is built by one of the services using it
    # A registry and tag from the environment.
    raw = yaml.safe_load(COMPOSE.read_text())
    env = {**_env_file(EXAMPLE_ENV), "TRIGREASON_REGISTRY": "ghcr.io/x/", "TRIGREASON_TAG": "v1"}
    assert interpolate(raw, env)["services"]["lrm-worker"]["image"] == "ghcr.io/x/trigreason-worker:v1"


def test_traces_flow_to_jaeger_through_the_collector(compose: dict[str, Any]) -> None:
    for service in SERVICES:
        env = compose["services"][service]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    collector = yaml.safe_load((COMPOSE.parent / "otel" / "collector.yaml").read_text())
    pipeline = collector["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert collector["exporters"][pipeline["exporters"][0]]["endpoint"] == "jaeger:4317"
    assert set(collector["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_dockerfile_passes_hadolint() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install trigreason\nUSER root\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def _stages(text: str) -> dict[str, list[str]]:
    """The Dockerfile's stages: name -> its lines (continuations joined), FROM line first."""
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.replace("\\\n", " ").splitlines():
        m = re.match(r"^FROM \S+ AS (\S+)$", line)
        if m:
            current = stages[m.group(1)] = [line]
        elif current is not None and line and not line.startswith("#"):
            current.append(line)
    return stages


def _workspace_dependencies(member: str) -> list[str]:
    """The workspace members (``trigreason-*``) that ``member``'s pyproject.toml depends on, in its order."""
    for path in (ROOT / "services").glob("*/pyproject.toml"):
        project = tomllib.loads(path.read_text())["project"]
        if project["name"] == member:
            names = (re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0] for d in project["dependencies"])
            return [n for n in names if n.startswith("trigreason-")]
    raise AssertionError(f"no workspace member {member}")


def test_one_image_per_service_built_from_its_own_package() -> None:
    text = DOCKERFILE.read_text()
    stages = _stages(text)
    assert list(stages)[-1] == "cli"  # the default target: the whole CLI
    for image in IMAGES:
        build, final = stages[f"build-{image.target}"], stages[image.target]
        extras = "".join(f" --extra {e}" for e in image.extras)
        # Dependencies first (a layer that changes with uv.lock only), then the members, as wheels.
        syncs = [" ".join(line.split()) for line in build if "uv sync" in line]
        # Every workspace member the image holds is reinstalled from the checkout (the service, runtime,
        # proto, and the members the service depends on, e.g. the gateway's policy registry).
        reinstall = [image.member, "trigreason-runtime", "trigreason-proto"]
        reinstall += [m for m in _workspace_dependencies(image.member) if m not in reinstall]
        assert [s.removeprefix("RUN --mount=type=cache,target=/root/.cache/uv ") for s in syncs] == [
            f"uv sync --frozen --no-dev --no-install-workspace --package {image.member}{extras}",
            f"uv sync --frozen --no-dev --no-editable --package {image.member}{extras}"
            + "".join(f" --reinstall-package {m}" for m in reinstall),
        ]
        assert final[0] == f"FROM runtime AS {image.target}"
        assert f"COPY --from=build-{image.target} /app/.venv /app/.venv" in final
        assert "USER 10001:10001" in final
        assert f'ENTRYPOINT ["python", "-m", "{image.module}"]' in final
        # No compiler in any image: build tools only in the tgi-cpu build stage.
        assert not any("build-essential" in line or "cmake" in line for line in final)
    assert 'CMD ["srm"]' in stages["worker"]  # both roles, one image: srm unless told lrm
    assert any("libgomp1" in line for line in stages["tgi-cpu"])  # llama.cpp's OpenMP
    assert [name for name, lines in stages.items() if any("build-essential" in x for x in lines)] == [
        "build-tgi-cpu"
    ]
    # The manifests layer holds every workspace member's pyproject.toml (uv needs the whole workspace).
    members = [
        "proto",
        *sorted(f"services/{p.parent.name}" for p in (ROOT / "services").glob("*/pyproject.toml")),
    ]
    copied = sorted(m.group(1) for m in re.finditer(r"^COPY (\S+)/pyproject.toml \1/$", text, re.MULTILINE))
    assert copied == sorted(members)
    assert "slim" in stages["runtime"][0]
    assert 'ENTRYPOINT ["trigreason"]' in stages["cli"]
    # llama.cpp's flags are the ones in pyproject.toml, which uv applies while building it in the image.
    pyproject = (ROOT / "pyproject.toml").read_text()
    for flag in ('GGML_NATIVE" = "OFF"', 'GGML_AVX2" = "ON"', 'GGML_AVX512" = "OFF"'):
        assert flag in pyproject
    assert "GGML_NATIVE=OFF" in text  # and the Dockerfile says so where it builds it
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert [line for line in ignored if line and not line.startswith("#")][:8] == [
        "*",
        "!pyproject.toml",
        "!uv.lock",
        "!README.md",
        "!proto/",
        "!services/",
        "!trigreason/",
        "**/__pycache__",
    ]


def test_the_lrm_server_allows_the_judges_top_n(compose: dict[str, Any]) -> None:
    """Regression: stock TGI refuses top_n_tokens above 5, and SpecReason's judge asks for 20."""
    flags = [str(a) for a in compose["services"]["tgi-lrm"]["command"]]
    (flag,) = [f for f in flags if f.startswith("--max-top-n-tokens=")]
    assert int(flag.split("=", 1)[1]) >= SpecReasonParams().judge_top_n
