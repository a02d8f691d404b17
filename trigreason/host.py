"""Run one of the cluster's services by name: what ``trigreason serve`` and the embedded stack use. Each
service's own entry point (``python -m trigreason.services.<service>``) runs the same ``serve`` function."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from trigreason.profiles import load_profile
from trigreason.proto import BUS_SERVICES, BusService, ConfigError, Role
from trigreason.services import gateway, orchestrator, trigger_evaluator, worker
from trigreason.services.runtime import BusSettings, HostSettings
from trigreason.services.worker.backends import Backend

__all__ = ["SERVICES", "BackendFactory", "ServiceName", "ServiceSettings", "run_service"]

# The services that talk to the bus (each its own NATS user): the vocabulary's names.
ServiceName = BusService
SERVICES: tuple[ServiceName, ...] = BUS_SERVICES
BackendFactory = Callable[[Role], Awaitable[Backend]]


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceSettings:
    """Everything a service of the cluster reads from the environment: the bus, the gateway (profiles by
    name, as the CLI knows them) and how the process runs."""

    bus: BusSettings = field(default_factory=BusSettings)
    gateway: gateway.GatewaySettings = field(default_factory=gateway.GatewaySettings)
    host: HostSettings = field(default_factory=HostSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> ServiceSettings:
        """The settings from ``env``; ``overrides`` (flags) name HostSettings fields (``port=0``, ...)."""
        return cls(
            bus=BusSettings.from_env(env),
            gateway=gateway.GatewaySettings.from_env(
                env, load_profile=lambda ref: load_profile(ref, env=env)
            ),
            host=HostSettings.from_env(env, **overrides),
        )


async def run_service(
    name: ServiceName,
    settings: ServiceSettings,
    *,
    stop: asyncio.Event,
    tracer_provider: TracerProvider,
    backend_factory: BackendFactory | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run ``name`` until ``stop`` is set; then return within about ``settings.host.drain_s`` + 5 seconds.
    Raises the service's error if it fails."""
    common: dict[str, Any] = {
        "bus": settings.bus,
        "host": settings.host,
        "stop": stop,
        "tracer_provider": tracer_provider,
        "on_ready": on_ready,
    }
    if name == "gateway":
        await gateway.serve(settings.gateway, **common)
    elif name == "orchestrator":
        await orchestrator.serve(**common)
    elif name == "trigger-evaluator":
        await trigger_evaluator.serve(**common)
    else:
        role: Role = "srm" if name == "srm-worker" else "lrm"
        if backend_factory is None:
            raise ConfigError(f"{name} needs an inference backend URL")
        factory = backend_factory

        async def backend() -> Backend:
            return await factory(role)

        await worker.serve(role, backend, **common)
