from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from trigreason.services._nats_server import LocalNatsServer


@pytest.fixture
async def nats_server() -> AsyncIterator[LocalNatsServer]:
    """A real nats-server with JetStream on a free loopback port and a temporary store."""
    async with LocalNatsServer() as server:
        yield server
