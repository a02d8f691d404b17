from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import cast

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests.containers import (
    IMAGE_TAG_VARIABLE,
    ContainerNats,
    ContainerStack,
    NatsServer,
    StackEndpoints,
    fixture_mode,
)
from tests.services.cluster import Cluster
from trigreason.nats_server import LocalNatsServer
from trigreason.services.backend_sim import SimSettings, make_app, start_server
from trigreason.services.runtime import BusSettings
from trigreason.stack import StackSpec, embedded_stack

# The load simulator behind ``service_stack``, as TRIGREASON_SIM_* settings (the same in either mode):
# quick steps, an answer after two.
STACK_SIM: Mapping[str, str] = {
    "TRIGREASON_SIM_TIME_PER_TOKEN_MS": "1",
    "TRIGREASON_SIM_ANSWER_AFTER": "2",
    "TRIGREASON_SIM_ANSWER_P": "1",
    "TRIGREASON_SIM_CONCURRENCY": "8",
}


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    """A real nats-server with JetStream: a process on a free loopback port and a temporary store, or in
    container mode (tests/containers.py) the official NATS image, with the same ``url``, ``kill()`` and
    ``restart()``."""
    server: ContainerNats | LocalNatsServer = (
        ContainerNats() if fixture_mode().containers else LocalNatsServer()
    )
    async with server:
        yield server


@pytest.fixture
async def cluster(nats_server: NatsServer) -> AsyncIterator[Cluster]:
    c = Cluster(
        cast(LocalNatsServer, nats_server),  # the cluster reads only its url, which either mode has
        BusSettings(nats_url=nats_server.url, ack_wait_s=2.0, backoff_s=(0.1,), storage="memory"),
    )
    yield c
    await c.close()


@pytest.fixture
async def service_stack() -> AsyncIterator[StackEndpoints]:
    """NATS, the load simulator (STACK_SIM) and the five services (gateway, orchestrator,
    trigger-evaluator, srm and lrm workers), reached at ``nats_url`` and ``gateway_url``. Containers from
    the per-service images of TRIGREASON_TEST_IMAGE_TAG (default latest) in container mode; else the
    embedded stack (a local nats-server, the services as tasks of this process) on an in-process
    simulator."""
    if fixture_mode().containers:
        tag = os.environ.get(IMAGE_TAG_VARIABLE) or "latest"
        async with ContainerStack(tag=tag, sim_env=STACK_SIM) as endpoints:
            yield endpoints
        return
    runner, sim = await start_server(
        make_app(SimSettings.from_env(STACK_SIM, host="127.0.0.1", port=0)), host="127.0.0.1", port=0
    )
    try:
        spec = StackSpec(srm_url=sim, lrm_url=sim, gateway_port=0)
        env = {**os.environ, "OTEL_SDK_DISABLED": "true"}
        async with embedded_stack(spec, tracer_provider=TracerProvider(), env=env) as running:
            assert running.gateway_url is not None
            yield StackEndpoints(nats_url=running.nats_url, gateway_url=running.gateway_url)
    finally:
        await runner.cleanup()
