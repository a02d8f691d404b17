from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest

from tests.containers import ContainerNats, NatsServer, fixture_mode
from tests.services.cluster import Cluster
from trigreason.services.runtime import BusSettings
from trigreason.stack import LocalNatsServer


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    """A real nats-server with JetStream: a process on a free loopback port and a temporary store, or in
    container mode (tests/containers.py) the official NATS image, with the same ``url``, ``kill()`` and
    ``restart()``."""
    server: ContainerNats | LocalNatsServer = ContainerNats() if fixture_mode().containers else LocalNatsServer()
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
