"""The container mode of the integration fixtures (tests/containers.py) with no Docker engine: which mode a
run picks, and what each container would be (image, command, environment, ports, health wait)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests import containers
from tests.containers import (
    MODE_VARIABLE,
    ContainerNats,
    ContainerSpec,
    ContainerStack,
    EngineProbe,
    HttpWait,
    LogWait,
    Mode,
    ModeError,
    backend_sim_definition,
    definitions_by_name,
    image_name,
    nats_definition,
    select_mode,
    service_definitions,
    tgi_cpu_definition,
)

UP = EngineProbe(True, "28.2.2 at unix:///var/run/docker.sock")
DOWN = EngineProbe(False, "unix:///var/run/docker.sock: connection refused")


def _probe(result: EngineProbe) -> tuple[Callable[[], EngineProbe], list[int]]:
    calls: list[int] = []

    def probe() -> EngineProbe:
        calls.append(1)
        return result

    return probe, calls


# --- the mode -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "engine", "kind"),
    [
        (None, UP, "containers"),
        (None, DOWN, "processes"),
        ("", UP, "containers"),
        ("", DOWN, "processes"),
        ("1", UP, "containers"),
        (" 1 ", UP, "containers"),
        ("0", UP, "processes"),
        ("0", DOWN, "processes"),
    ],
)
def test_the_variable_and_the_engine_choose_the_mode(
    value: str | None, engine: EngineProbe, kind: str
) -> None:
    env = {} if value is None else {MODE_VARIABLE: value}
    probe, _ = _probe(engine)
    mode = select_mode(env, probe)
    assert mode.kind == kind
    assert mode.containers == (kind == "containers")
    assert mode.header.startswith(f"integration fixtures: {kind} (")


def test_the_reason_names_the_variable_or_the_engine() -> None:
    assert select_mode({}, _probe(DOWN)[0]) == Mode("processes", f"no Docker engine: {DOWN.detail}")
    assert select_mode({}, _probe(UP)[0]) == Mode("containers", f"Docker engine {UP.detail}")
    assert (
        select_mode({MODE_VARIABLE: "1"}, _probe(UP)[0]).reason
        == f"{MODE_VARIABLE}=1, Docker engine {UP.detail}"
    )
    assert select_mode({MODE_VARIABLE: "0"}, _probe(UP)[0]).reason == f"{MODE_VARIABLE}=0"
    assert select_mode({}, _probe(DOWN)[0]).header == (
        f"integration fixtures: processes (no Docker engine: {DOWN.detail})"
    )


def test_0_does_not_ask_the_engine() -> None:
    probe, calls = _probe(UP)
    select_mode({MODE_VARIABLE: "0"}, probe)
    assert calls == []


def test_1_without_an_engine_is_an_error_not_a_fallback() -> None:
    with pytest.raises(ModeError, match=rf"{MODE_VARIABLE}=1 but no Docker engine is reachable: .*refused"):
        select_mode({MODE_VARIABLE: "1"}, _probe(DOWN)[0])


@pytest.mark.parametrize("value", ["yes", "true", "2", "auto", "containers", "-1"])
def test_other_values_are_a_clear_error(value: str) -> None:
    probe, calls = _probe(UP)
    with pytest.raises(ModeError) as err:
        select_mode({MODE_VARIABLE: value}, probe)
    assert str(err.value) == (
        f"{MODE_VARIABLE}={value!r}: expected 1 (containers), 0 (processes) or unset "
        "(containers when a Docker engine is reachable)"
    )
    assert calls == []


def test_the_real_probe_answers_without_raising() -> None:
    # Reachable or not, it says why, in one line; here (no engine) it is not reachable.
    probe = containers.probe_docker_engine(timeout_s=2)
    assert probe.detail
    assert "\n" not in probe.detail


# --- the definitions ------------------------------------------------------------------------------------


def test_image_names() -> None:
    assert image_name("gateway") == "trigreason-gateway:latest"
    assert image_name("trigger-evaluator", "1.2.3") == "trigreason-trigger-evaluator:1.2.3"
    assert image_name("worker", "sha-abc") == "trigreason-worker:sha-abc"
    with pytest.raises(ValueError, match="no image target 'srm-worker'"):
        image_name("srm-worker", "x")  # type: ignore[arg-type]


def test_nats_runs_jetstream_and_is_healthy_by_its_monitoring_endpoint() -> None:
    spec = nats_definition()
    assert spec.image == "nats:2.11-alpine"
    assert spec.entrypoint == ()  # the image's own, which runs nats-server with these flags
    assert spec.command == ("-js", "-sd", "/data", "-m", "8222")
    assert spec.ports == (4222, 8222)
    assert spec.wait == HttpWait(8222, "/healthz?js-enabled-only=true")
    assert nats_definition("nats:2.12").image == "nats:2.12"


SRM, LRM = "http://srm:80", "http://lrm:80"


def _services(**kw: Any) -> dict[str, ContainerSpec]:
    return definitions_by_name(service_definitions(srm_url=SRM, lrm_url=LRM, **kw))


def test_the_five_services_their_images_and_commands() -> None:
    specs = _services(tag="t1")
    assert list(specs) == ["gateway", "orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker"]
    assert {n: s.image for n, s in specs.items()} == {
        "gateway": "trigreason-gateway:t1",
        "orchestrator": "trigreason-orchestrator:t1",
        "trigger-evaluator": "trigreason-trigger-evaluator:t1",
        "srm-worker": "trigreason-worker:t1",
        "lrm-worker": "trigreason-worker:t1",
    }
    assert {n: (*s.entrypoint, *s.command) for n, s in specs.items()} == {
        "gateway": ("python", "-m", "trigreason.services.gateway"),
        "orchestrator": ("python", "-m", "trigreason.services.orchestrator"),
        "trigger-evaluator": ("python", "-m", "trigreason.services.trigger_evaluator"),
        "srm-worker": ("python", "-m", "trigreason.services.worker", "srm"),
        "lrm-worker": ("python", "-m", "trigreason.services.worker", "lrm"),
    }
    # The role is the worker's argument, not part of its entry point.
    assert specs["srm-worker"].entrypoint == ("python", "-m", "trigreason.services.worker")
    assert specs["srm-worker"].command == ("srm",)
    assert specs["gateway"].command == ()


def test_the_services_environment() -> None:
    specs = _services(env={"TRIGREASON_ACK_WAIT_S": "2"})
    for spec in specs.values():
        assert spec.env["TRIGREASON_NATS_URL"] == "nats://nats:4222"
        assert spec.env["TRIGREASON_HOST"] == "0.0.0.0"
        assert spec.env["TRIGREASON_ACK_WAIT_S"] == "2"
    assert specs["gateway"].env["TRIGREASON_PORT"] == "8080"
    assert "TRIGREASON_METRICS_PORT" not in specs["gateway"].env
    for name in ("orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker"):
        assert specs[name].env["TRIGREASON_METRICS_PORT"] == "9090"
    # Each worker gets its own backend, and only its own.
    assert specs["srm-worker"].env["TRIGREASON_SRM_URL"] == SRM
    assert "TRIGREASON_LRM_URL" not in specs["srm-worker"].env
    assert specs["lrm-worker"].env["TRIGREASON_LRM_URL"] == LRM
    assert "TRIGREASON_SRM_URL" not in specs["lrm-worker"].env
    other = _services(nats_url="nats://elsewhere:4222")
    assert {s.env["TRIGREASON_NATS_URL"] for s in other.values()} == {"nats://elsewhere:4222"}


def test_the_services_ports_and_health_waits() -> None:
    specs = _services()
    assert specs["gateway"].ports == (8080,)
    assert specs["gateway"].wait == HttpWait(8080, "/readyz")
    for name in ("orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker"):
        assert specs[name].ports == (9090,)
        assert specs[name].wait == HttpWait(9090, "/readyz")


def test_the_backends() -> None:
    sim = backend_sim_definition(tag="t2", env={"TRIGREASON_SIM_ANSWER_AFTER": "6"})
    assert sim.name == "backend-sim"
    assert sim.image == "trigreason-backend-sim:t2"
    assert sim.entrypoint == ("python", "-m", "trigreason.services.backend_sim")
    assert sim.command == ()
    assert dict(sim.env) == {
        "TRIGREASON_SIM_HOST": "0.0.0.0",
        "TRIGREASON_SIM_PORT": "8090",
        "TRIGREASON_SIM_ANSWER_AFTER": "6",
    }
    assert sim.ports == (8090,)
    assert sim.wait == HttpWait(8090, "/health")

    tgi = tgi_cpu_definition(tag="t2", model="srm")
    assert tgi.image == "trigreason-tgi-cpu:t2"
    assert tgi.entrypoint == ("python", "-m", "trigreason.services.tgi_cpu")
    assert tgi.command == ()
    assert tgi.env["TRIGREASON_TGI_CPU_MODEL"] == "srm"
    assert tgi.env["TRIGREASON_TGI_CPU_HOST"] == "0.0.0.0"
    assert tgi.env["TRIGREASON_TGI_CPU_PORT"] == "8080"
    assert tgi.ports == (8080,)
    assert tgi.wait == HttpWait(8080, "/health", timeout_s=300.0)


def test_the_stack_wires_the_workers_to_the_simulator() -> None:
    stack = ContainerStack(tag="t3", sim_env={"TRIGREASON_SIM_SEED": "1"})
    specs = definitions_by_name(stack.specs)
    assert list(specs) == [
        "backend-sim",
        "gateway",
        "orchestrator",
        "trigger-evaluator",
        "srm-worker",
        "lrm-worker",
    ]
    assert specs["srm-worker"].env["TRIGREASON_SRM_URL"] == "http://backend-sim:8090"
    assert specs["lrm-worker"].env["TRIGREASON_LRM_URL"] == "http://backend-sim:8090"
    assert specs["backend-sim"].env["TRIGREASON_SIM_SEED"] == "1"
    assert {s.image.rsplit(":", 1)[1] for s in stack.specs} == {"t3"}


def test_a_definition_is_immutable_and_its_wait_port_exposed() -> None:
    spec = nats_definition()
    with pytest.raises(TypeError):
        spec.env["X"] = "y"  # type: ignore[index]
    with pytest.raises(ValueError, match="polls port 9090, not exposed"):
        ContainerSpec(name="x", image="i", command=(), wait=HttpWait(9090, "/"), ports=(8080,))
    ContainerSpec(name="x", image="i", command=(), wait=LogWait("ready"))  # a log wait needs no port


# --- the glue, up to the engine -------------------------------------------------------------------------


class _NoEngine:
    """Stands in for testcontainers' DockerClient: building a container definition needs no engine."""

    def __init__(self, **_kw: Any) -> None:
        pass


def test_a_definition_becomes_a_testcontainers_container(monkeypatch: pytest.MonkeyPatch) -> None:
    from testcontainers.core import container as tc
    from testcontainers.core.wait_strategies import HttpWaitStrategy, LogMessageWaitStrategy

    monkeypatch.setattr(tc, "DockerClient", _NoEngine)
    spec = nats_definition()
    built = containers.make_container(spec, bind={4222: 14222})
    assert built.image.endswith("nats:2.11-alpine")
    # What goes to the engine's create call (testcontainers keeps it in these attributes).
    assert built._command == ["-js", "-sd", "/data", "-m", "8222"]
    assert "entrypoint" not in built._kwargs
    assert built.ports == {"4222": 14222, "8222": None}  # 4222 fixed, 8222 any free port
    assert isinstance(containers.wait_strategy(spec.wait), HttpWaitStrategy)
    assert isinstance(containers.wait_strategy(LogWait("consuming")), LogMessageWaitStrategy)

    gateway = definitions_by_name(service_definitions(srm_url=SRM, lrm_url=LRM))["gateway"]
    built = containers.make_container(gateway)
    assert built._kwargs["entrypoint"] == ["python", "-m", "trigreason.services.gateway"]
    assert built._command is None  # no arguments: not the image's CMD either
    assert built.env == dict(gateway.env)
    assert built.ports == {"8080": None}

    worker = definitions_by_name(service_definitions(srm_url=SRM, lrm_url=LRM))["lrm-worker"]
    built = containers.make_container(worker)
    assert built._kwargs["entrypoint"] == ["python", "-m", "trigreason.services.worker"]
    assert built._command == ["lrm"]


def test_container_nats_keeps_its_host_port_for_restarts() -> None:
    server = ContainerNats()
    assert server.url == f"nats://127.0.0.1:{server.port}"
    assert server.port > 0
    with pytest.raises(RuntimeError, match="has not started"):
        server.kill()
