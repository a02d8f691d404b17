"""Hosting one service process: its settings, its consumer loops, probes, and a bounded stop.

Every service's entry point (``python -m trigreason.services.<service>``) and the user-facing package's
``trigreason serve`` / embedded stack run services through here, so they start, report readiness and stop
the same way. Stopping is bounded: in-flight work gets ``drain_s`` to finish (what does not is redelivered
by JetStream after its ack wait), then it is cancelled, and the NATS connection is closed within a few
seconds more, whatever state the server is in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from trigreason.proto import ConfigError, ConsumerName, TrigReasonError, TypedDecoder

from ._bus import Ack, Bus, Defer, Delivery, consume
from ._eventloop import run as run_event_loop
from ._metrics import LrmPrices, ServiceMetrics, exposition
from ._observability import configure_logging, configure_tracing, shutdown_tracing
from ._process import on_stop_signals
from ._settings import env_settings
from ._topology import BusSettings, consumer_spec

__all__ = [
    "ConsumerBinding",
    "ConsumerService",
    "HostSettings",
    "close_bus",
    "consumer_service",
    "run_bounded",
    "serve_consumers",
    "service_main",
    "stop_on_signals",
]

# Closing the NATS connection (and a service's own clients), each at most this long.
CLOSE_S = 2.0
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


@dataclass(frozen=True, kw_only=True, slots=True)
class HostSettings:
    """How a service process runs (``TRIGREASON_HOST``, ``_PORT``, ``_CONCURRENCY``, ``_METRICS_PORT``,
    ``_DRAIN_S``, ``_SITE``, ``_LRM_INPUT_USD_PER_M``, ``_LRM_CACHED_INPUT_USD_PER_M``,
    ``_LRM_OUTPUT_USD_PER_M``)."""

    host: str = "127.0.0.1"
    port: int = 8080
    # How many messages one replica works on at once (workers: backend requests in flight).
    concurrency: int = 8
    # Non-gateway services serve /metrics, /healthz and /readyz here (0: off).
    metrics_port: int = 0
    # After a stop: how long in-flight work (and open HTTP requests, SSE streams included) may go on; then
    # it is cancelled (JetStream redelivers unacked messages after their ack wait).
    drain_s: float = 5.0
    # The ``site`` label on every metric of this process (an edge site, the cloud; one value per site).
    site: str = "default"
    # What the LRM's tokens cost (USD per million): the ``trigreason_lrm_cost_usd_total`` metric.
    lrm_input_usd_per_m: float = 0.55
    lrm_cached_input_usd_per_m: float = 0.14
    lrm_output_usd_per_m: float = 2.19

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if not 0 <= self.port < 65536 or not 0 <= self.metrics_port < 65536:
            raise ConfigError("ports must be within 0..65535")
        if not 0 <= self.drain_s < float("inf"):
            raise ConfigError(f"TRIGREASON_DRAIN_S={self.drain_s}: seconds >= 0")
        if not _SITE.fullmatch(self.site):
            raise ConfigError(f"TRIGREASON_SITE={self.site!r}: letters, digits, '-' and '_' (1-63)")
        for name in ("lrm_input_usd_per_m", "lrm_cached_input_usd_per_m", "lrm_output_usd_per_m"):
            if not 0 <= getattr(self, name) < float("inf"):
                raise ConfigError(f"TRIGREASON_{name.upper()}={getattr(self, name)}: a price >= 0")

    def metrics(self) -> ServiceMetrics:
        """A fresh registry of this process's metrics, labelled with its site and priced."""
        prices = LrmPrices(
            input_usd_per_m=self.lrm_input_usd_per_m,
            cached_input_usd_per_m=self.lrm_cached_input_usd_per_m,
            output_usd_per_m=self.lrm_output_usd_per_m,
        )
        return ServiceMetrics(site=self.site, prices=prices)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> HostSettings:
        return env_settings(cls, env, prefix="TRIGREASON_", overrides=overrides)


@dataclass(frozen=True, slots=True)
class ConsumerBinding:
    """One durable consumer a service pulls from, with the decoder and handler for its subject."""

    consumer: ConsumerName
    decoder: TypedDecoder[Any]
    handler: Callable[[Delivery[Any]], Awaitable[Ack | Defer]]


class ConsumerService(Protocol):
    """What a bus-driven service (orchestrator, trigger-evaluator, worker) offers its host."""

    def bindings(self) -> Sequence[ConsumerBinding]: ...

    async def aclose(self) -> None: ...


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (SIGINT too when the process inherited it ignored)."""
    on_stop_signals(lambda _sig: stop.set())


async def run_bounded(
    serve: Awaitable[None],
    *,
    stop: asyncio.Event,
    drain_s: float,
    log: Any,
    started: asyncio.Event | None = None,
) -> None:
    """Run ``serve`` until it returns or ``stop`` is set; then give it ``drain_s`` to finish and about
    ``2 x CLOSE_S`` more to close. A service that has not ``started`` yet (NATS not reachable, say) has
    nothing to drain and is cancelled at once. Raises the service's own error, if any."""
    serving = asyncio.ensure_future(serve)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        running = started is None or started.is_set()
        if not serving.done() and running:
            await asyncio.wait({serving}, timeout=drain_s)
        if not serving.done():
            log.warning("drain_timeout" if running else "stopped_while_starting", drain_s=drain_s)
            serving.cancel()
    except asyncio.CancelledError:
        serving.cancel()
        await asyncio.wait({serving}, timeout=2 * CLOSE_S + 1.0)
        raise
    finally:
        stopping.cancel()
    await asyncio.wait({serving}, timeout=2 * CLOSE_S + 1.0)  # what is left is bounded: closing
    if not serving.done():
        log.warning("close_timeout")
        return
    if not serving.cancelled():
        serving.result()


async def serve_consumers(
    name: str,
    make: Callable[[Bus, ServiceMetrics], Awaitable[ConsumerService]],
    *,
    bus_settings: BusSettings,
    host: HostSettings,
    stop: asyncio.Event,
    tracer_provider: TracerProvider,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Connect, build the service, pull from each of its consumers until ``stop``, then close (bounded)."""
    log = structlog.get_logger("trigreason.host").bind(service=name)
    started = asyncio.Event()

    async def serve() -> None:
        bus = await Bus.connect(bus_settings, name=name, tracer=tracer_provider.get_tracer("trigreason"))
        service: ConsumerService | None = None
        try:
            metrics = host.metrics()
            bus.metrics = metrics
            service = await make(bus, metrics)
            bindings = service.bindings()
            side_tasks = [asyncio.create_task(_watch_lag(bus, [b.consumer for b in bindings], metrics, stop))]
            if host.metrics_port:
                side_tasks.append(asyncio.create_task(_serve_probes(bus, metrics, host, stop)))
            log.info("consuming", consumers=[b.consumer for b in bindings])
            started.set()
            if on_ready:
                on_ready(bindings[0].consumer)
            await asyncio.gather(
                *(
                    consume(bus, b.consumer, b.decoder, b.handler, stop=stop, concurrency=host.concurrency)
                    for b in bindings
                )
            )
            log.info("drained")
            for task in side_tasks:
                task.cancel()
            await asyncio.gather(*side_tasks, return_exceptions=True)
        finally:
            if service is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(service.aclose(), CLOSE_S)
            await close_bus(bus, log)

    await run_bounded(serve(), stop=stop, drain_s=host.drain_s, log=log, started=started)


class ServeConsumers(Protocol):
    """What ``consumer_service`` returns: a service's ``serve`` (orchestrator, trigger-evaluator)."""

    async def __call__(
        self,
        *,
        bus: BusSettings,
        host: HostSettings,
        stop: asyncio.Event,
        tracer_provider: TracerProvider,
        on_ready: Callable[[str], None] | None = None,
    ) -> None: ...


def consumer_service(name: str, build: Callable[[Bus, ServiceMetrics], ConsumerService]) -> ServeConsumers:
    """The ``serve`` of a service that needs nothing but its bus and metrics to be built."""

    async def serve(
        *,
        bus: BusSettings,
        host: HostSettings,
        stop: asyncio.Event,
        tracer_provider: TracerProvider,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        async def make(connection: Bus, metrics: ServiceMetrics) -> ConsumerService:
            return build(connection, metrics)

        await serve_consumers(
            name,
            make,
            bus_settings=bus,
            host=host,
            stop=stop,
            tracer_provider=tracer_provider,
            on_ready=on_ready,
        )

    serve.__doc__ = f"Run the {name} until ``stop``; then drain and close (bounded)."
    return serve


async def close_bus(bus: Bus, log: Any) -> None:
    """Close the NATS connection (what is still buffered is flushed first) within ``CLOSE_S``.

    Not a drain (``Bus.close``): the service has stopped consuming by now, and a drain waits for every
    subscription's queue to empty, which a pull subscription's leftovers never do: it then ends only at
    nats-py's limit (30 s) with a DrainTimeoutError, and cutting it short leaves a cancelled future behind."""
    try:
        await asyncio.wait_for(bus.nc.close(), CLOSE_S)
    except TimeoutError:
        log.warning("close_timeout", after_s=CLOSE_S)
    except Exception as exc:  # already closed, or the server is gone: nothing left to do
        log.info("close_failed", error=repr(exc))


def service_main(
    name: str,
    run: Callable[[Mapping[str, str], asyncio.Event, TracerProvider], Awaitable[None]],
    *,
    env: Mapping[str, str] | None = None,
) -> int:
    """The body of ``python -m trigreason.services.<service>``: logging, tracing, signals, the event loop;
    a configuration or start-up error is one line on stderr and exit status 2, never a traceback."""
    env = dict(os.environ if env is None else env)
    configure_logging(service=name, level=env.get("TRIGREASON_LOG_LEVEL", "INFO"))
    provider = configure_tracing(service=name, env=env)

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run(env, stop, provider)

    try:
        run_event_loop(main, env=env)
    except TrigReasonError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        shutdown_tracing(provider)
    return 0


async def _watch_lag(
    bus: Bus, consumers: Sequence[ConsumerName], metrics: ServiceMetrics, stop: asyncio.Event
) -> None:
    """Pending messages of this service's consumers: the queue lag (what KEDA scales SRM workers on)."""
    while not stop.is_set():
        for consumer in consumers:
            spec = consumer_spec(bus.settings, consumer)
            with contextlib.suppress(Exception):
                info = await bus.js.consumer_info(spec.stream, spec.durable)
                pending = info.num_pending + (info.num_ack_pending or 0)
                metrics.consumer_lag.labels(spec.stream, consumer).set(pending)
                if consumer == "orchestrator-timer":
                    # One deadline timer waits per running session: the sessions in flight.
                    metrics.sessions_in_flight.set(pending)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)


async def _serve_probes(bus: Bus, metrics: ServiceMetrics, host: HostSettings, stop: asyncio.Event) -> None:
    async def metrics_endpoint(request: web.Request) -> web.Response:
        body, content_type = exposition(metrics.registry, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

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
    await web.TCPSite(runner, host.host, host.metrics_port).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
