"""The edge-cloud topology against real nats-servers (a hub and leaf nodes with JetStream domains, mutual TLS,
per-site accounts), the WAN emulator on the leaf connections and the services, with the load simulator as
both models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from trigreason.edge_cloud import EdgeCloud, EdgeCloudSpec, edge_cloud_stack
from trigreason.services.backend_sim import SimSettings, StepLength, make_app, start_server


@pytest.fixture
async def sim_url() -> AsyncIterator[str]:
    """Short steps, an answer after three: a session takes about a second."""
    settings = SimSettings(
        time_per_token_ms=1,
        step_tokens=StepLength("fixed", 10, 10),
        answer_after=3,
        answer_p=1.0,
        concurrency=32,
    )
    runner, url = await start_server(make_app(settings), host="127.0.0.1", port=0)
    yield url
    await runner.cleanup()


@pytest.fixture
async def two_sites(sim_url: str) -> AsyncIterator[EdgeCloud]:
    """Edge sites ``a`` and ``b`` sharing a cloud pool of two LRM workers, through the WAN emulator."""
    spec = EdgeCloudSpec(sites=("a", "b"), lrm_workers=2, srm_url=sim_url, lrm_url=sim_url, gateway_port=0)
    async with edge_cloud_stack(spec, tracer_provider=TracerProvider(), env={}) as stack:
        yield stack
