"""Run the gateway as a service process: ``main`` is its image's entry point (``python -m
trigreason.services.gateway``) and what ``trigreason serve gateway`` calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from trigreason.proto import ConfigError
from trigreason.services.runtime import Bus, BusSettings, HostSettings, close_bus, run_bounded, service_main

from ._app import make_app
from ._settings import GatewaySettings

__all__ = ["main", "serve"]


async def serve(
    settings: GatewaySettings,
    *,
    bus: BusSettings,
    host: HostSettings,
    stop: asyncio.Event,
    tracer_provider: TracerProvider,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve HTTP on ``host.host:host.port`` until ``stop``; open requests (SSE streams never end by
    themselves) then get a third of the drain, and everything closes within about ``host.drain_s``."""
    log = structlog.get_logger("trigreason.host").bind(service="gateway")
    started = asyncio.Event()

    async def run() -> None:
        connection = await Bus.connect(bus, name="gateway", tracer=tracer_provider.get_tracer("trigreason"))
        try:
            runner = web.AppRunner(
                make_app(connection, settings), access_log=None, shutdown_timeout=host.drain_s / 3
            )
            await runner.setup()
            site = web.TCPSite(runner, host.host, host.port)
            try:
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                raise ConfigError(
                    f"cannot listen on {host.host}:{host.port}: {exc.strerror or exc}", code="listen"
                ) from exc
            sockets = getattr(site._server, "sockets", None) or []
            port = sockets[0].getsockname()[1] if sockets else host.port  # the real one when port=0
            url = f"http://{host.host}:{port}"
            log.info("listening", url=url)
            started.set()
            if on_ready:
                on_ready(url)
            await stop.wait()
            await runner.cleanup()
        finally:
            await close_bus(connection, log)

    await run_bounded(run(), stop=stop, drain_s=host.drain_s, log=log, started=started)


def main(
    env: Mapping[str, str] | None = None,
    *,
    load_profile: Callable[[str], dict[str, Any]] | None = None,
    **host: Any,
) -> int:
    """The gateway process, configured from ``env`` (default: the environment; ``TRIGREASON_*``,
    docs/cluster.md). ``TRIGREASON_PROFILE`` is a profile file, or a name where ``load_profile`` (the CLI's
    profile lookup) is given; ``host`` overrides ``HostSettings`` fields (flags). Returns the exit status."""
    return service_main(
        "gateway",
        lambda env, stop, provider: serve(
            GatewaySettings.from_env(env, load_profile=load_profile),
            bus=BusSettings.from_env(env),
            host=HostSettings.from_env(env, **host),
            stop=stop,
            tracer_provider=provider,
        ),
        env=env,
    )
