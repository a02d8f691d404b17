"""Run an SRM or LRM worker as a service process: ``main`` is its image's entry point (``python -m
trigreason.services.worker srm|lrm``) and what ``trigreason serve srm-worker|lrm-worker`` calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from trigreason.proto import ConfigError, Role
from trigreason.services.runtime import (
    Bus,
    BusSettings,
    HostSettings,
    ServiceMetrics,
    serve_consumers,
    service_main,
)

from ._service import Worker
from .backends import Backend, BackendSettings, ReplicaPool, make_backend

__all__ = ["backend_from_env", "main", "serve"]


def backend_from_env(role: Role, env: Mapping[str, str]) -> Callable[[], Awaitable[Backend]]:
    """The backend of ``role`` as the environment names it: ``TRIGREASON_<ROLE>_URL`` (or
    ``TRIGREASON_BACKEND_URL``): one URL, a comma-separated list of replicas or ``dns+http://NAME:PORT``;
    with ``TRIGREASON_BACKEND_*`` settings (timeouts, retries, routing, ...)."""
    url = env.get(f"TRIGREASON_{role.upper()}_URL") or env.get("TRIGREASON_BACKEND_URL")
    settings = BackendSettings.from_env(env)

    async def make() -> Backend:
        if not url:
            raise ConfigError(f"the {role}-worker needs TRIGREASON_{role.upper()}_URL (its inference server)")
        return await make_backend(url, settings=settings)

    return make


async def serve(
    role: Role,
    backend: Callable[[], Awaitable[Backend]],
    *,
    bus: BusSettings,
    host: HostSettings,
    stop: asyncio.Event,
    tracer_provider: TracerProvider,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Work on ``role``'s commands until ``stop``; then drain, close the backend and the bus (bounded)."""

    async def make(connection: Bus, metrics: ServiceMetrics) -> Worker:
        made = await backend()
        if isinstance(made, ReplicaPool):  # its per-replica counts join the service's /metrics
            metrics.registry.register(made.collector())
        worker = Worker(connection, role, made, metrics=metrics)
        worker.start_publishing_limits()
        return worker

    await serve_consumers(
        f"{role}-worker", make, bus_settings=bus, host=host, stop=stop, tracer_provider=tracer_provider,
        on_ready=on_ready,
    )  # fmt: skip


def main(role: Role, env: Mapping[str, str] | None = None, **host: Any) -> int:
    """A worker process of ``role``, configured from ``env`` (default: the environment; ``TRIGREASON_*``,
    docs/cluster.md, docs/backends.md); ``host`` overrides ``HostSettings`` fields (flags). A bad
    ``TRIGREASON_BACKEND_*`` setting fails before anything starts. Returns the exit status."""
    return service_main(
        f"{role}-worker",
        lambda env, stop, provider: serve(
            role,
            backend_from_env(role, env),
            bus=BusSettings.from_env(env),
            host=HostSettings.from_env(env, **host),
            stop=stop,
            tracer_provider=provider,
        ),
        env=env,
    )
