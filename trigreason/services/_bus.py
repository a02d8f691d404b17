"""The shared service runtime on JetStream: publish with a deterministic message id and trace context,
consume from a durable pull consumer with an explicit acknowledgement policy and a dead-letter stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import msgspec
import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Tracer

from trigreason.core import StaleEvent, TrigReasonError
from trigreason.proto import Message, TypedDecoder, dead_letter_subject, encode, subject_for
from trigreason.services._metrics import ServiceMetrics
from trigreason.services._topology import CONSUMERS, BusSettings, ensure_topology

__all__ = ["Ack", "Bus", "Delivery", "consume"]

T = TypeVar("T")

# What a handler tells the consumer loop to do with the message it was given.
Ack = Literal["ack", "retry"]


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    message: T
    subject: str
    delivered: int  # 1 on first delivery
    raw: Msg

    async def keep_alive(self) -> None:
        """Tell JetStream the work is still in progress (resets the ack wait)."""
        await self.raw.in_progress()


class Bus:
    """A connection to NATS with the project's streams; one per service process."""

    def __init__(
        self, nc: NatsClient, js: JetStreamContext, kv: KeyValue, settings: BusSettings, tracer: Tracer
    ):
        self.nc = nc
        self.js = js
        self.kv = kv
        self.settings = settings
        self.tracer = tracer
        self.log = structlog.get_logger("trigreason.bus")
        self.metrics: ServiceMetrics | None = None

    @classmethod
    async def connect(cls, settings: BusSettings, *, name: str, tracer: Tracer | None = None) -> Bus:
        nc = await nats.connect(
            settings.nats_url,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            **settings.connect_options(),  # credentials, inbox prefix
        )
        js = nc.jetstream()
        kv = await ensure_topology(js, settings)
        return cls(nc, js, kv, settings, tracer or trace.get_tracer("trigreason"))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()

    async def publish(
        self, message: Message, *, msg_id: str, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Publish to the message's subject; JetStream drops a second publish of the same ``msg_id``."""
        subject = subject_for(message)
        with self.tracer.start_as_current_span(
            f"{subject} publish",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "publish",
                "messaging.destination.name": subject,
                "messaging.message.id": msg_id,
                "trigreason.session_id": message.session_id,
                "trigreason.message_type": type(message).__name__,
                **(attributes or {}),
            },
        ):
            headers: dict[str, str] = {"Nats-Msg-Id": msg_id}
            propagate.inject(headers)
            await self.js.publish(subject, encode(message), headers=headers)

    async def dead_letter(self, raw: Msg, reason: str) -> None:
        headers = {
            "Trig-Dead-Letter-Reason": reason[:1000],
            "Trig-Origin-Subject": raw.subject,
        }
        with contextlib.suppress(Exception):
            headers["Trig-Deliveries"] = str(raw.metadata.num_delivered)
        await self.js.publish(dead_letter_subject(raw.subject), raw.data, headers=headers)
        self.log.warning("dead_lettered", subject=raw.subject, reason=reason[:200])
        if self.metrics is not None:
            self.metrics.dead_letters.labels(raw.subject.split(".")[1]).inc()


async def consume(
    bus: Bus,
    consumer: str,
    decoder: TypedDecoder[T],
    handler: Callable[[Delivery[T]], Awaitable[Ack]],
    *,
    stop: asyncio.Event,
    concurrency: int = 1,
) -> None:
    """Pull from the durable ``consumer`` until ``stop`` is set, then finish what is in flight.

    Acknowledgement policy, explicit: a handler's ``ack`` acks; ``retry`` (or a retryable error) naks with
    the consumer's backoff; a message that cannot be decoded, or fails on its last allowed delivery, or
    raises a non-retryable error goes to the dead-letter stream with the reason and is terminated. A
    ``StaleEvent`` (duplicate) is acked: everything it could cause has happened already.
    """
    spec = CONSUMERS[consumer]
    sub = await bus.js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
    limit = asyncio.Semaphore(concurrency)
    in_flight: set[asyncio.Task[None]] = set()
    log = bus.log.bind(consumer=consumer)
    backoff = bus.settings.backoff_s or (1.0,)

    async def process(raw: Msg) -> None:
        try:
            delivered = raw.metadata.num_delivered or 1
            try:
                message = decoder.decode(raw.data)
            except msgspec.DecodeError as exc:
                await bus.dead_letter(raw, f"undecodable: {exc}")
                await raw.term()
                return
            ctx = propagate.extract(dict(raw.headers or {}))
            with bus.tracer.start_as_current_span(
                f"{raw.subject} process",
                context=ctx,
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": raw.subject,
                    "messaging.consumer.group.name": spec.durable,
                    "messaging.message.delivery_count": delivered,
                    "trigreason.message_type": type(message).__name__,
                },
            ):
                outcome = await _run(handler, Delivery(message, raw.subject, delivered, raw), log)
            if outcome == "ack":
                await raw.ack()
            elif isinstance(outcome, str) and outcome.startswith("dead:"):
                await bus.dead_letter(raw, outcome.removeprefix("dead:"))
                await raw.term()
            elif delivered >= bus.settings.max_deliver:
                await bus.dead_letter(raw, f"delivery limit {bus.settings.max_deliver} reached: {outcome}")
                await raw.term()
            else:
                await raw.nak(delay=backoff[min(delivered - 1, len(backoff) - 1)])
        finally:
            limit.release()

    def start(raw: Msg) -> None:
        task = asyncio.create_task(process(raw))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    while not stop.is_set():
        await limit.acquire()
        try:
            # One message, returned the moment it arrives: with a larger batch nats-py's lingering pull
            # holds the first message until the batch fills or the wait ends (up to 0.5 s when idle).
            first = await _fetch(sub, 1, _IDLE_WAIT_S, log)
        except BaseException:
            limit.release()
            raise
        if not first:
            limit.release()
            continue
        start(first[0])
        # Under load, take what is already waiting in one request (nats-py asks without waiting first, so
        # a batch of messages that exist comes back at once), as many as there are free slots.
        pending = first[0].metadata.num_pending or 0
        while pending > 0 and not stop.is_set():
            free = concurrency - len(in_flight)
            if free <= 0:
                break
            more = await _fetch(sub, min(free, pending), _BUSY_WAIT_S, log)
            for raw in more:
                await limit.acquire()
                start(raw)
            pending = (more[-1].metadata.num_pending or 0) if more else 0
    # Drain: SIGTERM lets in-flight work finish; anything not acked is redelivered elsewhere.
    if in_flight:
        await asyncio.gather(*in_flight, return_exceptions=True)
    with contextlib.suppress(Exception):
        await sub.unsubscribe()


async def _fetch(sub: Any, n: int, wait_s: float, log: Any) -> list[Msg]:
    try:
        msgs: list[Msg] = await sub.fetch(n, timeout=wait_s)
        return msgs
    except (NatsTimeoutError, TimeoutError):
        return []  # nothing to fetch (nats-py raises either, depending on where the wait ended)
    except Exception as exc:
        log.warning("fetch_failed", error=repr(exc))
        await asyncio.sleep(0.2)
        return []


_IDLE_WAIT_S = 0.5  # a pull waits this long for a message (and a stop request is noticed this often)
_BUSY_WAIT_S = 0.05  # bounds a batch pull that raced with another replica and found nothing


async def _run(handler: Callable[[Delivery[T]], Awaitable[Ack]], delivery: Delivery[T], log: Any) -> str:
    try:
        return await handler(delivery)
    except StaleEvent as exc:
        log.info("stale_event_dropped", reason=exc.message)
        return "ack"
    except TrigReasonError as exc:
        if exc.retryable:
            log.warning("retryable_error", code=exc.code, error=exc.message)
            return f"retry: {exc.code}: {exc.message}"
        log.error("non_retryable_error", code=exc.code, error=exc.message)
        return f"dead:{exc.code}: {exc.message}"
    except Exception as exc:
        log.exception("handler_crashed")
        return f"retry: {type(exc).__name__}: {exc}"
