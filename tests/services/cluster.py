"""A cluster of services as asyncio tasks, each with its own NATS connection (tests only)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats
from opentelemetry.trace import Tracer

from trigreason.nats_server import LocalNatsServer
from trigreason.proto import (
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionRequested,
    decode_message,
    event_subject,
    session_events,
)
from trigreason.services.orchestrator import Orchestrator
from trigreason.services.runtime import Bus, BusSettings, consume
from trigreason.services.trigger_evaluator import TriggerEvaluator
from trigreason.services.worker import Worker
from trigreason.services.worker.backends import Backend


class Cluster:
    def __init__(self, server: LocalNatsServer, settings: BusSettings, tracer: Tracer | None = None) -> None:
        self.server = server
        self.settings = settings
        self.tracer = tracer
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.buses: list[Bus] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def on_close(self, *closers: Callable[[], Awaitable[None]]) -> None:
        """Also run these when the cluster closes (backends' HTTP clients)."""
        self._closers.extend(closers)

    async def start(self, name: str, make: Callable[[Bus], Any], concurrency: int = 4) -> None:
        bus = await Bus.connect(self.settings, name=name, tracer=self.tracer)
        self.buses.append(bus)
        service = make(bus)
        self.tasks.append(
            asyncio.create_task(
                consume(
                    bus,
                    service.consumer,
                    service.decoder,
                    service.handle,
                    stop=self.stop,
                    concurrency=concurrency,
                )
            )
        )
        if isinstance(service, Orchestrator):  # the sessions' deadline timers
            self.tasks.append(
                asyncio.create_task(
                    consume(
                        bus,
                        service.timer_consumer,
                        service.timer_decoder,
                        service.handle_timer,
                        stop=self.stop,
                        concurrency=concurrency,
                    )
                )
            )

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for bus in self.buses:
            await bus.close()
        for closer in self._closers:
            await closer()


async def start_all(cluster: Cluster, srm: Backend, lrm: Backend) -> None:
    await cluster.start("orchestrator", Orchestrator)
    await cluster.start("trigger-evaluator", TriggerEvaluator)
    await cluster.start("srm-worker", lambda b: Worker(b, "srm", srm))
    await cluster.start("lrm-worker", lambda b: Worker(b, "lrm", lrm))


async def submit_and_wait(
    url: str, session_id: str, question: str, params: SessionParams, wait_s: float = 20
) -> list[Any]:
    """Publish a request and collect the session's committed/finished events from the event stream."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.publish(
            event_subject(session_id, "requested"),
            msgspec.json.encode(SessionRequested(session_id=session_id, question=question, params=params)),
            headers={"Nats-Msg-Id": f"{session_id}.requested"},
        )
        sub = await js.subscribe(session_events(session_id), ordered_consumer=True)
        events: list[Any] = []
        async with asyncio.timeout(wait_s):
            async for msg in sub.messages:
                ev = decode_message(msg.data)
                events.append(ev)
                if isinstance(ev, SessionFinished | SessionFailed):
                    return events
    finally:
        await nc.close()
    raise AssertionError("unreachable")
