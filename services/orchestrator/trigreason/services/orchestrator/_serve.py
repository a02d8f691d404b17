"""Run the session-orchestrator as a service process (its image's entry point and ``trigreason serve``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider

from trigreason.services.runtime import Bus, BusSettings, HostSettings, ServiceMetrics, serve_consumers

from ._service import Orchestrator

__all__ = ["serve"]


async def serve(
    *,
    bus: BusSettings,
    host: HostSettings,
    stop: asyncio.Event,
    tracer_provider: TracerProvider,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Consume session events and deadline timers until ``stop``; then drain and close (bounded)."""

    async def make(connection: Bus, metrics: ServiceMetrics) -> Orchestrator:
        return Orchestrator(connection, metrics)

    await serve_consumers(
        "orchestrator", make, bus_settings=bus, host=host, stop=stop, tracer_provider=tracer_provider,
        on_ready=on_ready,
    )  # fmt: skip
