from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.services.cluster import Cluster
from trigreason.services.runtime import BusSettings
from trigreason.stack import LocalNatsServer


@pytest.fixture
async def nats_server() -> AsyncIterator[LocalNatsServer]:
    """A real nats-server with JetStream on a free loopback port and a temporary store."""
    async with LocalNatsServer() as server:
        yield server


@pytest.fixture
async def cluster(nats_server: LocalNatsServer) -> AsyncIterator[Cluster]:
    c = Cluster(
        nats_server, BusSettings(nats_url=nats_server.url, ack_wait_s=2.0, backoff_s=(0.1,), storage="memory")
    )
    yield c
    await c.close()
