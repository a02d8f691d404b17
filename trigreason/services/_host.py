"""Run one service (or several, for the embedded stack) until told to stop; SIGTERM drains in-flight work.

Stopping is bounded: in-flight work gets ``drain_s`` to finish (what does not is redelivered by JetStream
after its ack wait), then it is cancelled, and the NATS connection and the backend are closed within a few
seconds more, whatever state the server or the backend is in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trigreason._process import on_stop_signals
from trigreason.backends import Backend
from trigreason.core import ConfigError
from trigreason.proto import Role
from trigreason.services._bus import Bus, consume
from trigreason.services._metrics import ServiceMetrics
from trigreason.services._topology import CONSUMERS, BusSettings
from trigreason.services.gateway import GatewaySettings, make_app
from trigreason.services.orchestrator import Orchestrator
from trigreason.services.trigger_evaluator import TriggerEvaluator
from trigreason.services.worker import Worker

__all__ = ["SERVICES", "BackendFactory", "ServiceName", "ServiceSettings", "run_service", "stop_on_signals"]

ServiceName = Literal["gateway", "orchestrator", "trigger-evaluator", "srm-worker", "lrm-worker"]
SERVICES: tuple[ServiceName, ...] = (
    "gateway",
    "orchestrator",
    "trigger-evaluator",
    "srm-worker",
    "lrm-worker",
)
BackendFactory = Callable[[Role], Awaitable[Backend]]


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceSettings:
    bus: BusSettings = field(default_factory=BusSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    host: str = "127.0.0.1"
    port: int = 8080
    # How many messages one replica works on at once (workers: backend requests in flight).
    concurrency: int = 8
    # Non-gateway services serve /metrics, /healthz and /readyz here (0: off).
    metrics_port: int = 0
    # After a stop: how long in-flight work (and open HTTP requests, SSE streams included) may go on; then
    # it is cancelled (JetStream redelivers unacked messages after their ack wait).
    drain_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> ServiceSettings:
        try:
            base = cls(
                bus=BusSettings.from_env(env),
                gateway=GatewaySettings.from_env(dict(env)),
                host=env.get("TRIGREASON_HOST", "127.0.0.1"),
                port=int(env.get("TRIGREASON_PORT", "8080")),
                concurrency=int(env.get("TRIGREASON_CONCURRENCY", "8")),
                metrics_port=int(env.get("TRIGREASON_METRICS_PORT", "0")),
                drain_s=float(env.get("TRIGREASON_DRAIN_S", "5")),
            )
        except ValueError as exc:
            raise ConfigError(f"bad setting: {exc}") from exc
        if not 0 <= base.drain_s < float("inf"):
            raise ConfigError(f"TRIGREASON_DRAIN_S={base.drain_s}: a number of seconds >= 0")
        return cls(**{**{f: getattr(base, f) for f in cls.__dataclass_fields__}, **overrides})


# Closing the NATS connection and the backend's HTTP session, each at most this long.
_CLOSE_S = 2.0


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (SIGINT too when the process inherited it ignored)."""
    on_stop_signals(lambda _sig: stop.set())


async def run_service(
    name: ServiceName,
    settings: ServiceSettings,
    *,
    stop: asyncio.Event,
    tracer_provider: TracerProvider,
    backend_factory: BackendFactory | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run ``name`` until ``stop`` is set; then return within about ``settings.drain_s`` + 2 x ``_CLOSE_S``
    seconds. Raises the service's error if it fails."""
    log = structlog.get_logger("trigreason.host").bind(service=name)
    started = False  # a service still starting (e.g. NATS not reachable yet) has nothing to drain

    def ready(what: str) -> None:
        nonlocal started
        started = True
        if on_ready is not None:
            on_ready(what)

    serving = asyncio.create_task(
        _serve(name, settings, stop=stop, tracer_provider=tracer_provider, backend_factory=backend_factory,
               on_ready=ready, log=log)
    )  # fmt: skip
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done() and started:
            await asyncio.wait({serving}, timeout=settings.drain_s)
        if not serving.done():
            log.warning("drain_timeout" if started else "stopped_while_starting", drain_s=settings.drain_s)
            serving.cancel()
    except asyncio.CancelledError:
        serving.cancel()
        await asyncio.wait({serving}, timeout=2 * _CLOSE_S + 1.0)
        raise
    finally:
        stopping.cancel()
    await asyncio.wait({serving}, timeout=2 * _CLOSE_S + 1.0)  # what is left is bounded: closing
    if not serving.done():
        log.warning("close_timeout")
        return
    if not serving.cancelled():
        serving.result()  # the service's own error, if any


async def _serve(
    name: ServiceName,
    settings: ServiceSettings,
    *,
    stop: asyncio.Event,
    tracer_provider: TracerProvider,
    backend_factory: BackendFactory | None,
    on_ready: Callable[[str], None] | None,
    log: Any,
) -> None:
    bus = await Bus.connect(settings.bus, name=name, tracer=tracer_provider.get_tracer("trigreason"))
    backend: Backend | None = None
    try:
        if name == "gateway":
            # Open requests (SSE streams never end by themselves) may go on for a third of the drain, then
            # are cancelled (aiohttp waits as long again for that): cleanup() ends within the drain.
            runner = web.AppRunner(
                make_app(bus, settings.gateway), access_log=None, shutdown_timeout=settings.drain_s / 3
            )
            await runner.setup()
            site = web.TCPSite(runner, settings.host, settings.port)
            try:
                await site.start()
            except OSError as exc:  # the port is taken, or the address is not ours
                await runner.cleanup()
                raise ConfigError(
                    f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}", code="listen"
                ) from exc
            sockets = getattr(site._server, "sockets", None) or []
            port = sockets[0].getsockname()[1] if sockets else settings.port  # the real one when port=0
            url = f"http://{settings.host}:{port}"
            log.info("listening", url=url)
            if on_ready:
                on_ready(url)
            await stop.wait()
            await runner.cleanup()
            return
        metrics = ServiceMetrics()
        bus.metrics = metrics
        service: Orchestrator | TriggerEvaluator | Worker
        if name == "orchestrator":
            service = Orchestrator(bus, metrics)
        elif name == "trigger-evaluator":
            service = TriggerEvaluator(bus, metrics)
        else:
            role: Role = "srm" if name == "srm-worker" else "lrm"
            if backend_factory is None:
                raise ConfigError(f"{name} needs an inference backend URL")
            backend = await backend_factory(role)
            service = Worker(bus, role, backend, metrics=metrics)
        side_tasks = [asyncio.create_task(_watch_lag(bus, service.consumer, metrics, stop))]
        if settings.metrics_port:
            side_tasks.append(asyncio.create_task(_serve_probes(bus, metrics, settings, stop)))
        log.info("consuming", consumer=service.consumer)
        if on_ready:
            on_ready(service.consumer)
        loops = [
            consume(  # type: ignore[misc]  # each service pairs its own decoder and handler
                bus,
                service.consumer,
                service.decoder,
                service.handle,
                stop=stop,
                concurrency=settings.concurrency,
            )
        ]
        if isinstance(service, Orchestrator):  # it also runs the sessions' deadline timers
            loops.append(
                consume(
                    bus,
                    service.timer_consumer,
                    service.timer_decoder,
                    service.handle_timer,
                    stop=stop,
                    concurrency=settings.concurrency,
                )
            )
        await asyncio.gather(*loops)
        log.info("drained")
        for task in side_tasks:
            task.cancel()
        await asyncio.gather(*side_tasks, return_exceptions=True)
    finally:
        if backend is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(backend.aclose(), _CLOSE_S)
        await _close_bus(bus, log)


async def _close_bus(bus: Bus, log: Any) -> None:
    """Close the NATS connection (what is still buffered is flushed first) within ``_CLOSE_S``.

    Not a drain (``Bus.close``): the service has stopped consuming by now, and a drain waits for every
    subscription's queue to empty, which a pull subscription's leftovers never do: it then ends only at
    nats-py's limit (30 s) with a DrainTimeoutError, and cutting it short leaves a cancelled future behind."""
    try:
        await asyncio.wait_for(bus.nc.close(), _CLOSE_S)
    except TimeoutError:
        log.warning("close_timeout", after_s=_CLOSE_S)
    except Exception as exc:  # already closed, or the server is gone: nothing left to do
        log.info("close_failed", error=repr(exc))


async def _watch_lag(bus: Bus, consumer: str, metrics: ServiceMetrics, stop: asyncio.Event) -> None:
    """Pending messages of this service's consumer: the queue lag (and what KEDA scales SRM workers on)."""
    spec = CONSUMERS[consumer]
    while not stop.is_set():
        with contextlib.suppress(Exception):
            info = await bus.js.consumer_info(spec.stream, spec.durable)
            metrics.consumer_lag.labels(consumer).set(info.num_pending + (info.num_ack_pending or 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)


async def _serve_probes(
    bus: Bus, metrics: ServiceMetrics, settings: ServiceSettings, stop: asyncio.Event
) -> None:
    async def metrics_endpoint(_r: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_r: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_r: web.Request) -> web.Response:
        ok = bus.nc.is_connected
        return web.json_response({"status": "ready" if ok else "not_ready"}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.metrics_port).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
