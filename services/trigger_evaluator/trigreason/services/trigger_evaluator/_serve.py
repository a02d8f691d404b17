"""Run the trigger-evaluator as a service process (its image's entry point and ``trigreason serve``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider

from trigreason.services.runtime import Bus, BusSettings, HostSettings, ServiceMetrics, serve_consumers

from ._service import TriggerEvaluator

__all__ = ["serve"]


async def serve(
    *,
    bus: BusSettings,
    host: HostSettings,
    stop: asyncio.Event,
    tracer_provider: TracerProvider,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Judge SRM steps (and judge scores) until ``stop``; then drain and close (bounded)."""

    async def make(connection: Bus, metrics: ServiceMetrics) -> TriggerEvaluator:
        return TriggerEvaluator(connection, metrics)

    await serve_consumers(
        "trigger-evaluator", make, bus_settings=bus, host=host, stop=stop, tracer_provider=tracer_provider,
        on_ready=on_ready,
    )  # fmt: skip
