"""The container mode of the integration fixtures: NATS and the services from the per-service images.

``TRIGREASON_TEST_CONTAINERS=1`` forces containers, ``0`` forbids them, unset detects a reachable Docker
engine. Without one the fixtures run the same processes as always (``trigreason.stack.LocalNatsServer``,
the services in-process or as subprocesses). The suite's header says which mode it ran in.

Three layers, the first two pure (unit-tested with no engine, tests/unit/test_containers.py):

- ``select_mode(env, engine_probe)``: which mode, and why.
- ``ContainerSpec``: one container as data (image, entry point and command, environment, exposed ports,
  health wait), and
  the builders ``nats_definition``, ``service_definitions`` (NATS + the five services, for an image tag and
  the backends' URLs), ``backend_sim_definition`` and ``tgi_cpu_definition``.
- The glue: ``ContainerNats`` (what the ``nats_server`` fixture yields in container mode, with the interface
  of ``LocalNatsServer`` the tests use) and ``ContainerStack`` (NATS, the load simulator and the five
  services on a network of their own). ``testcontainers`` is imported only here, when a container starts,
  so a machine without the package or the engine runs the suite as before.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import socket
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network
    from testcontainers.core.wait_strategies import WaitStrategy

__all__ = [
    "IMAGE_TAG_VARIABLE",
    "MODE_VARIABLE",
    "NATS_IMAGE",
    "NATS_IMAGE_VARIABLE",
    "ContainerNats",
    "ContainerSpec",
    "ContainerStack",
    "EngineProbe",
    "HttpWait",
    "LogWait",
    "Mode",
    "ModeError",
    "NatsServer",
    "StackEndpoints",
    "backend_sim_definition",
    "fixture_mode",
    "image_name",
    "nats_definition",
    "probe_docker_engine",
    "select_mode",
    "service_definitions",
    "tgi_cpu_definition",
]

MODE_VARIABLE = "TRIGREASON_TEST_CONTAINERS"
IMAGE_TAG_VARIABLE = "TRIGREASON_TEST_IMAGE_TAG"  # the per-service images' tag (default: latest)
NATS_IMAGE_VARIABLE = "TRIGREASON_TEST_NATS_IMAGE"
NATS_IMAGE = "nats:2.11-alpine"

# Ports inside the containers (the host side is mapped by the engine).
NATS_PORT = 4222
NATS_MONITOR_PORT = 8222
GATEWAY_PORT = 8080
PROBE_PORT = 9090  # /metrics, /healthz, /readyz of the bus-driven services (TRIGREASON_METRICS_PORT)
BACKEND_SIM_PORT = 8090
TGI_CPU_PORT = 8080

# The image targets in the Dockerfile; an image is named ``trigreason-<target>:<tag>``.
Target = Literal["gateway", "orchestrator", "trigger-evaluator", "worker", "tgi-cpu", "backend-sim"]
TARGETS: tuple[Target, ...] = get_args(Target)


# --- which mode -----------------------------------------------------------------------------------------


class ModeError(ValueError):
    """TRIGREASON_TEST_CONTAINERS holds a value other than 1, 0 or nothing, or is 1 with no engine."""


@dataclass(frozen=True, slots=True)
class EngineProbe:
    """What asking the Docker engine gave: reachable, and its version and address or why not."""

    reachable: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Mode:
    kind: Literal["containers", "processes"]
    reason: str

    @property
    def containers(self) -> bool:
        return self.kind == "containers"

    @property
    def header(self) -> str:
        """The line the suite prints at the top (``pytest_report_header``)."""
        return f"integration fixtures: {self.kind} ({self.reason})"


def select_mode(env: Mapping[str, str], engine_probe: Callable[[], EngineProbe]) -> Mode:
    """The integration fixtures' mode. ``engine_probe`` is asked only when the variable leaves it open or
    forces containers (then an engine that is not there is an error, not a silent fallback)."""
    raw = env.get(MODE_VARIABLE)
    value = "" if raw is None else raw.strip()
    if value == "0":
        return Mode("processes", f"{MODE_VARIABLE}=0")
    if value not in ("", "1"):
        raise ModeError(
            f"{MODE_VARIABLE}={raw!r}: expected 1 (containers), 0 (processes) or unset "
            "(containers when a Docker engine is reachable)"
        )
    probe = engine_probe()
    if value == "1":
        if not probe.reachable:
            raise ModeError(f"{MODE_VARIABLE}=1 but no Docker engine is reachable: {probe.detail}")
        return Mode("containers", f"{MODE_VARIABLE}=1, Docker engine {probe.detail}")
    if probe.reachable:
        return Mode("containers", f"Docker engine {probe.detail}")
    return Mode("processes", f"no Docker engine: {probe.detail}")


def probe_docker_engine(timeout_s: int = 3) -> EngineProbe:
    """Ask the engine that DOCKER_HOST (or the default socket) names for its version."""
    try:
        importlib.import_module("testcontainers.core.container")
        docker: Any = importlib.import_module("docker")
    except ImportError as exc:
        return EngineProbe(False, f"the testcontainers package is not installed ({exc})")
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(timeout=timeout_s)
        try:
            version = client.version().get("Version", "?")
        finally:
            client.close()
    except Exception as exc:  # any failure to talk to it means: no engine for us
        return EngineProbe(False, f"{where}: {type(exc).__name__}: {_one_line(str(exc))}")
    return EngineProbe(True, f"{version} at {where}")


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@functools.cache
def fixture_mode() -> Mode:
    """This run's mode, decided once (tests/conftest.py prints it and turns a ModeError into a usage
    error)."""
    return select_mode(os.environ, probe_docker_engine)


# --- container definitions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogWait:
    """Ready once a line matching ``pattern`` (a regular expression) appears in the container's output."""

    pattern: str
    timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class HttpWait:
    """Ready once ``GET path`` on the container's ``port`` answers ``status``."""

    port: int
    path: str
    status: int = 200
    timeout_s: float = 60.0


HealthWait = LogWait | HttpWait


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One container: ``name`` is its role and its host name on the stack's network. ``entrypoint``: the
    program (empty: the image's own); ``command``: its arguments. The per-service images' entry point is
    ``python -m trigreason.services.<svc>``; naming it here keeps the tests right whichever way the
    Dockerfile spells it."""

    name: str
    image: str
    command: tuple[str, ...]
    wait: HealthWait
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    ports: tuple[int, ...] = ()
    entrypoint: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", types.MappingProxyType(dict(self.env)))
        if isinstance(self.wait, HttpWait) and self.wait.port not in self.ports:
            raise ValueError(f"{self.name}: the health wait polls port {self.wait.port}, not exposed")


def image_name(target: Target, tag: str = "latest") -> str:
    if target not in TARGETS:
        raise ValueError(f"no image target {target!r}: one of {', '.join(TARGETS)}")
    return f"trigreason-{target}:{tag}"


def nats_definition(image: str = NATS_IMAGE) -> ContainerSpec:
    """nats-server with JetStream, its store inside the container (it survives a stop and a start) and the
    monitoring port, whose /healthz also answers after a restart (a log line would be there already)."""
    return ContainerSpec(
        name="nats",
        image=image,
        command=("-js", "-sd", "/data", "-m", str(NATS_MONITOR_PORT)),
        ports=(NATS_PORT, NATS_MONITOR_PORT),
        wait=HttpWait(NATS_MONITOR_PORT, "/healthz?js-enabled-only=true"),
    )


def _service_env(nats_url: str, extra: Mapping[str, str]) -> dict[str, str]:
    return {
        "TRIGREASON_NATS_URL": nats_url,
        "TRIGREASON_HOST": "0.0.0.0",  # inside the container, for the engine's port mapping
        "TRIGREASON_METRICS_PORT": str(PROBE_PORT),
        "OTEL_SDK_DISABLED": "true",
        **extra,
    }


def service_definitions(
    *,
    tag: str = "latest",
    srm_url: str,
    lrm_url: str,
    nats_url: str = f"nats://nats:{NATS_PORT}",
    env: Mapping[str, str] | None = None,
) -> tuple[ContainerSpec, ...]:
    """The five services (gateway, orchestrator, trigger-evaluator, srm and lrm workers) from the images of
    ``tag``, on ``nats_url`` (by default the ``nats`` container on the stack's network) and the backends at
    ``srm_url`` and ``lrm_url`` (as the containers reach them). ``env``: more TRIGREASON_* settings for
    all five. Each is ready when its /readyz answers 200 (bus connected, topology in place)."""
    extra = dict(env or {})
    gateway_env = {**_service_env(nats_url, extra), "TRIGREASON_PORT": str(GATEWAY_PORT)}
    gateway_env.pop("TRIGREASON_METRICS_PORT")  # the gateway serves its probes on its own port

    def bus_driven(name: str, target: Target, module: str, *args: str, **more: str) -> ContainerSpec:
        return ContainerSpec(
            name=name,
            image=image_name(target, tag),
            entrypoint=("python", "-m", module),
            command=args,
            env={**_service_env(nats_url, extra), **more},
            ports=(PROBE_PORT,),
            wait=HttpWait(PROBE_PORT, "/readyz"),
        )

    return (
        ContainerSpec(
            name="gateway",
            image=image_name("gateway", tag),
            entrypoint=("python", "-m", "trigreason.services.gateway"),
            command=(),
            env=gateway_env,
            ports=(GATEWAY_PORT,),
            wait=HttpWait(GATEWAY_PORT, "/readyz"),
        ),
        bus_driven("orchestrator", "orchestrator", "trigreason.services.orchestrator"),
        bus_driven("trigger-evaluator", "trigger-evaluator", "trigreason.services.trigger_evaluator"),
        bus_driven("srm-worker", "worker", "trigreason.services.worker", "srm", TRIGREASON_SRM_URL=srm_url),
        bus_driven("lrm-worker", "worker", "trigreason.services.worker", "lrm", TRIGREASON_LRM_URL=lrm_url),
    )


def backend_sim_definition(*, tag: str = "latest", env: Mapping[str, str] | None = None) -> ContainerSpec:
    """The load simulator (TGI's API with simulated latency); ``env``: TRIGREASON_SIM_* settings."""
    return ContainerSpec(
        name="backend-sim",
        image=image_name("backend-sim", tag),
        entrypoint=("python", "-m", "trigreason.services.backend_sim"),
        command=(),
        env={
            "TRIGREASON_SIM_HOST": "0.0.0.0",
            "TRIGREASON_SIM_PORT": str(BACKEND_SIM_PORT),
            **(env or {}),
        },
        ports=(BACKEND_SIM_PORT,),
        wait=HttpWait(BACKEND_SIM_PORT, "/health"),
    )


def tgi_cpu_definition(*, tag: str = "latest", model: str = "tiny", name: str = "tgi-cpu") -> ContainerSpec:
    """The CPU inference server on ``model`` (a model name, a GGUF path in the container or hf://...).
    Loading a model takes a while: its wait is longer."""
    return ContainerSpec(
        name=name,
        image=image_name("tgi-cpu", tag),
        entrypoint=("python", "-m", "trigreason.services.tgi_cpu"),
        command=(),
        env={
            "TRIGREASON_TGI_CPU_HOST": "0.0.0.0",
            "TRIGREASON_TGI_CPU_PORT": str(TGI_CPU_PORT),
            "TRIGREASON_TGI_CPU_MODEL": model,
        },
        ports=(TGI_CPU_PORT,),
        wait=HttpWait(TGI_CPU_PORT, "/health", timeout_s=300.0),
    )


# --- the glue: testcontainers ---------------------------------------------------------------------------


class NatsServer(Protocol):
    """What the tests use of the ``nats_server`` fixture, in either mode."""

    @property
    def url(self) -> str: ...

    def kill(self) -> None: ...

    async def restart(self) -> None: ...


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_strategy(wait: HealthWait) -> WaitStrategy:
    from testcontainers.core.wait_strategies import HttpWaitStrategy, LogMessageWaitStrategy

    timeout = timedelta(seconds=wait.timeout_s)
    if isinstance(wait, LogWait):
        return LogMessageWaitStrategy(wait.pattern).with_startup_timeout(timeout)
    return HttpWaitStrategy(wait.port, wait.path).for_status_code(wait.status).with_startup_timeout(timeout)


def make_container(
    spec: ContainerSpec, *, network: Network | None = None, bind: Mapping[int, int] | None = None
) -> DockerContainer:
    """``spec`` as a (not yet started) testcontainers container. ``bind``: container port -> fixed host
    port (a restarted container keeps its address); the other ports get any free host port."""
    from testcontainers.core.container import DockerContainer

    kwargs: dict[str, Any] = {"entrypoint": list(spec.entrypoint)} if spec.entrypoint else {}
    container = DockerContainer(spec.image, **kwargs).with_envs(**spec.env)
    if spec.command:
        container.with_command(list(spec.command))
    fixed = dict(bind or {})
    for port in spec.ports:
        if port in fixed:
            container.with_bind_ports(port, fixed[port])
        else:
            container.with_exposed_ports(port)
    if network is not None:
        container.with_network(network).with_network_aliases(spec.name)
    return container.waiting_for(wait_strategy(spec.wait))


class ContainerNats:
    """NATS in a container, as the ``nats_server`` fixture yields it in container mode: ``url``, ``port``,
    ``kill()`` (the container is killed, as a crash would) and ``restart()`` (the same container starts
    again: same host port, same JetStream store), ``start()``/``stop()`` and ``async with``."""

    def __init__(self, spec: ContainerSpec | None = None, *, network: Network | None = None) -> None:
        self._spec = spec or nats_definition(os.environ.get(NATS_IMAGE_VARIABLE) or NATS_IMAGE)
        self._network = network
        # Fixed host ports: a client reconnecting after restart() finds the server where it was.
        self._bind = {port: _free_port() for port in self._spec.ports}
        self._container: DockerContainer | None = None
        self._host = "127.0.0.1"
        self._port = self._bind[NATS_PORT]

    @property
    def url(self) -> str:
        return f"nats://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def container(self) -> DockerContainer:
        if self._container is None:
            raise RuntimeError("the NATS container has not started")
        return self._container

    async def start(self) -> None:
        def start() -> None:
            container = make_container(self._spec, network=self._network, bind=self._bind)
            self._container = container
            container.start()
            # Where this process reaches it: the bound port, or the container's own address and port
            # where the tests themselves run in a container (testcontainers' connection modes).
            self._host = container.get_container_host_ip()
            self._port = container.get_exposed_port(NATS_PORT)

        try:
            await asyncio.to_thread(start)
        except BaseException:
            await self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL, as a crash would; the container stays, with its store, for ``restart()``."""
        wrapped = self.container.get_wrapped_container()
        wrapped.kill()
        wrapped.wait(timeout=30)

    async def restart(self) -> None:
        def again() -> None:
            wrapped = self.container.get_wrapped_container()
            wrapped.reload()
            if wrapped.status == "running":
                wrapped.kill()
                wrapped.wait(timeout=30)
            wrapped.start()
            wait_strategy(self._spec.wait).wait_until_ready(self.container)

        await asyncio.to_thread(again)

    async def stop(self) -> None:
        if self._container is not None:
            await asyncio.to_thread(self._container.stop)
            self._container = None

    async def __aenter__(self) -> ContainerNats:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


@dataclass(frozen=True, slots=True)
class StackEndpoints:
    """Where the tests reach a running stack from the host."""

    nats_url: str
    gateway_url: str


class ContainerStack:
    """NATS, the load simulator and the five services, each a container on a network of their own; the
    services reach NATS as ``nats`` and the simulator as ``backend-sim``. ``async with`` starts them in
    order (each waits for its health check) and removes them all."""

    def __init__(
        self,
        *,
        tag: str = "latest",
        sim_env: Mapping[str, str] | None = None,
        service_env: Mapping[str, str] | None = None,
    ) -> None:
        sim = backend_sim_definition(tag=tag, env=sim_env)
        backend = f"http://{sim.name}:{BACKEND_SIM_PORT}"
        self.specs: tuple[ContainerSpec, ...] = (
            sim,
            *service_definitions(tag=tag, srm_url=backend, lrm_url=backend, env=service_env),
        )
        self._nats_spec = nats_definition(os.environ.get(NATS_IMAGE_VARIABLE) or NATS_IMAGE)
        self._network: Network | None = None
        self.nats: ContainerNats | None = None
        self.containers: dict[str, DockerContainer] = {}

    async def start(self) -> StackEndpoints:
        from testcontainers.core.network import Network

        network = self._network = await asyncio.to_thread(Network().create)
        self.nats = ContainerNats(self._nats_spec, network=network)
        await self.nats.start()

        def start(spec: ContainerSpec) -> None:
            container = make_container(spec, network=network)
            self.containers[spec.name] = container
            container.start()  # and waits for its health check

        for spec in self.specs:  # in order: the simulator, then the gateway, then the consumers
            await asyncio.to_thread(start, spec)
        gateway = self.containers["gateway"]
        host, port = await asyncio.to_thread(
            lambda: (gateway.get_container_host_ip(), gateway.get_exposed_port(GATEWAY_PORT))
        )
        return StackEndpoints(nats_url=self.nats.url, gateway_url=f"http://{host}:{port}")

    async def stop(self) -> None:
        for name in reversed(list(self.containers)):
            await asyncio.to_thread(self.containers.pop(name).stop)
        if self.nats is not None:
            await self.nats.stop()
        if self._network is not None:
            await asyncio.to_thread(self._network.remove)
            self._network = None

    async def __aenter__(self) -> StackEndpoints:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def definitions_by_name(specs: Sequence[ContainerSpec]) -> dict[str, ContainerSpec]:
    return {s.name: s for s in specs}
