"""The shared service runtime on JetStream: publish with a deterministic message id and trace context,
consume from a durable pull consumer with an explicit acknowledgement policy and a dead-letter stream."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import msgspec
import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError
from nats.js.kv import KeyValue
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Tracer

from trigreason.proto import (
    ConfigError,
    ConsumerName,
    Message,
    MessageDeadLettered,
    SessionId,
    StaleEvent,
    TrigReasonError,
    TypedDecoder,
    dead_letter_subject,
    encode,
    parse_subject,
    subject_for,
    subject_template,
)

from ._metrics import ServiceMetrics, trace_exemplar
from ._sites import ReplyRoute, answer_pings, current_route, route_of
from ._topology import BusSettings, consumer_spec, ensure_topology

__all__ = ["Ack", "Bus", "Defer", "Delivery", "consume"]

T = TypeVar("T")

# What a handler tells the consumer loop to do with the message it was given.
Ack = Literal["ack", "retry"]


@dataclass(frozen=True, slots=True)
class Defer:
    """Not yet: hand the message back to JetStream, to be delivered again in ``delay_s`` (timers).

    Unlike ``retry`` it is not a failure: it never counts towards the dead-letter limit."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class _Retry:
    reason: str


@dataclass(frozen=True, slots=True)
class _DeadLetter:
    reason: str


_Outcome = Literal["ack"] | Defer | _Retry | _DeadLetter

# Messages whose loss ends nothing further: their own dead letters must not start another round.
_NO_NOTICE_KINDS = frozenset({"dead_lettered", "failed", "finished"})


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
        # A service that exports no traces gets a NoOpTracer. Its spans would record nothing and only pass
        # the incoming trace context on, so none are made (they were 3-4% of each service's CPU in
        # bench_throughput): the trace headers of the message being handled are copied onto what it
        # publishes and sends instead (``inject``), which keeps the exporting services' traces connected.
        self.tracing = not isinstance(tracer, trace.NoOpTracer)
        self.log = structlog.get_logger("trigreason.bus")
        self.metrics: ServiceMetrics | None = None

    def span(
        self, name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractContextManager[trace.Span]:
        """A span of this service's own work, current inside the block (an invalid one when not tracing)."""
        if not self.tracing:
            return contextlib.nullcontext(trace.INVALID_SPAN)
        return self.tracer.start_as_current_span(name, kind=kind, attributes=attributes)

    def inject(self, headers: dict[str, str]) -> None:
        """The current trace context into ``headers`` (a message's, an HTTP request's): the current span's
        when tracing, else the trace headers of the message this task handles, unchanged."""
        if self.tracing:
            propagate.inject(headers)
        elif (carried := _carried_trace.get()) is not None:
            headers.update(carried)

    def exemplar(self) -> dict[str, str] | None:
        """The current span's trace id for a metric's exemplar (None when not tracing)."""
        return trace_exemplar() if self.tracing else None

    @classmethod
    async def connect(cls, settings: BusSettings, *, name: str, tracer: Tracer | None = None) -> Bus:
        log = structlog.get_logger("trigreason.bus").bind(service=name)

        async def on_error(exc: Exception) -> None:
            # One line per failed (re)connect attempt, instead of nats-py's traceback each time.
            log.warning("nats_error", error=f"{type(exc).__name__}: {exc}")

        nc = await nats.connect(
            # A comma-separated list names several servers of a cluster: any one of them will do.
            [url.strip() for url in settings.nats_url.split(",") if url.strip()],
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=on_error,
            **settings.connect_options(),  # credentials, inbox prefix
        )
        # The domain named in every JetStream request: across a leaf node a bare $JS.API is not ours.
        js = nc.jetstream(domain=settings.domain)
        try:
            kv = await ensure_topology(js, settings)
        except (NoRespondersError, ServiceUnavailableError, NatsTimeoutError, TimeoutError) as exc:
            await nc.close()
            where = (
                f"TRIGREASON_NATS_DOMAIN={settings.domain!r}: no JetStream server answers in that domain"
                if settings.domain is not None
                else "no JetStream server answers"
            )
            raise ConfigError(f"{where} at {settings.nats_url} ({type(exc).__name__})") from exc
        if settings.placement == "cloud":
            await answer_pings(nc)
        return cls(nc, js, kv, settings, tracer or trace.get_tracer("trigreason"))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()

    async def publish(
        self, message: Message, *, msg_id: str, attributes: Mapping[str, Any] | None = None
    ) -> None:
        """Publish to the message's subject; JetStream drops a second publish of the same ``msg_id``."""
        local_subject = subject_for(message)
        # A cloud worker answers a message from an edge site on that site's subjects (docs/sites.md).
        route = current_route()
        subject = route.subject(local_subject) if route is not None else local_subject
        headers: dict[str, str] = {"Nats-Msg-Id": msg_id}
        if not self.tracing:
            self.inject(headers)
            await self._send(subject, encode(message), headers, route)
            return
        # OpenTelemetry's messaging conventions: "{operation} {destination}", the destination's template
        # in the name (one operation per subject kind, not per session), the concrete subject attributed.
        template = subject_template(local_subject)
        with self.tracer.start_as_current_span(
            f"publish {template}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "publish",
                "messaging.operation.name": "publish",
                "messaging.destination.name": subject,
                "messaging.destination.template": template,
                "messaging.message.id": msg_id,
                "trigreason.session_id": message.session_id,
                "trigreason.message_type": type(message).__name__,
                **(attributes or {}),
            },
        ):
            propagate.inject(headers)
            await self._send(subject, encode(message), headers, route)

    async def _send(
        self, subject: str, data: bytes, headers: dict[str, str], route: ReplyRoute | None
    ) -> None:
        if route is None:
            await self.js.publish(subject, data, headers=headers)
        else:
            await self._publish_across(subject, data, headers, route.raw)

    async def _publish_across(self, subject: str, data: bytes, headers: dict[str, str], raw: Msg) -> None:
        """Publish to another site: while the WAN is down, keep trying (the message id makes a retry that
        did arrive a duplicate JetStream drops) and keep the command being answered alive, so it is not
        redelivered and generated again; give up after ``site_publish_timeout_s``."""
        deadline = time.monotonic() + self.settings.site_publish_timeout_s
        while True:
            try:
                await self.js.publish(subject, data, headers=headers, timeout=5.0)
                return
            except (NoRespondersError, NoStreamResponseError, NatsTimeoutError, TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise
                self.log.warning("site_unreachable", subject=subject, error=type(exc).__name__)
                with contextlib.suppress(Exception):
                    await raw.in_progress()
                await asyncio.sleep(1.0)

    async def dead_letter(self, raw: Msg, reason: str, *, clock: Callable[[], float] = time.time) -> None:
        """Move ``raw`` to the dead-letter stream; if it belongs to a session, tell that session's
        orchestrator (``MessageDeadLettered``), which ends it: a session never waits for a dead message."""
        headers = {
            "Trig-Dead-Letter-Reason": reason[:1000],
            "Trig-Origin-Subject": raw.subject,
        }
        sequence = 0
        with contextlib.suppress(Exception):
            headers["Trig-Deliveries"] = str(raw.metadata.num_delivered)
            sequence = raw.metadata.sequence.stream
        await self.js.publish(dead_letter_subject(raw.subject), raw.data, headers=headers)
        self.log.warning("dead_lettered", subject=raw.subject, reason=reason[:200])
        if self.metrics is not None:
            self.metrics.dead_letters.labels(subject_template(raw.subject), _reason_kind(reason)).inc()
        owner = _owner(raw.subject, raw.data)
        if owner is None:
            return
        session_id, command_id = owner
        notice = MessageDeadLettered(
            session_id=session_id,
            origin_subject=raw.subject,
            reason=reason[:1000],
            command_id=command_id,
            at=clock(),
        )
        await self.publish(notice, msg_id=f"{session_id}.dead.{raw.subject}.{sequence}")


def _reason_kind(reason: str) -> str:
    """A dead letter's reason as a label value of few values (the full text is in its headers)."""
    if reason.startswith("undecodable"):
        return "undecodable"
    if reason.startswith("delivery limit"):
        return "delivery_limit"
    return "rejected"


class _Owner(msgspec.Struct):
    """The fields that tie a message to a session, read leniently from bytes that failed to decode: only
    the session id must be right; a command id of the wrong type is as good as none."""

    session_id: SessionId
    command_id: Any = None
    candidate: Any = None


_owner_decoder = msgspec.json.Decoder(_Owner)


def _owner(subject: str, data: bytes) -> tuple[str, str | None] | None:
    """(session id, command id) of a dead message, or None when it belongs to no session we can name."""
    _, session, kind = parse_subject(subject)
    if kind in _NO_NOTICE_KINDS:
        return None
    try:
        owner = _owner_decoder.decode(data)
    except msgspec.DecodeError:
        owner = None
    if owner is not None:
        cid = owner.command_id
        if cid is None and isinstance(owner.candidate, dict):
            cid = owner.candidate.get("command_id")
        return owner.session_id, cid if isinstance(cid, str) and cid else None
    if session is not None:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            return msgspec.convert(session, SessionId), None
    return None


async def consume(
    bus: Bus,
    consumer: ConsumerName,
    decoder: TypedDecoder[T],
    handler: Callable[[Delivery[T]], Awaitable[Ack | Defer]],
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
    spec = consumer_spec(bus.settings, consumer)
    sub = await bus.js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
    limit = asyncio.Semaphore(concurrency)
    in_flight: set[asyncio.Task[None]] = set()
    log = bus.log.bind(consumer=consumer)
    backoff = bus.settings.backoff_s or (1.0,)
    max_deliver = spec.max_deliver if spec.max_deliver is not None else bus.settings.max_deliver

    metrics = bus.metrics
    observe = _Observer(metrics, consumer) if metrics is not None else None

    async def process(raw: Msg) -> None:
        route_of(raw)  # a message from an edge site: answers go back there (this task's context only)
        started = time.perf_counter()
        outcome: _Outcome | None = None
        exemplar: dict[str, str] | None = None
        try:
            delivered = raw.metadata.num_delivered or 1
            # (the orchestrator's timers come back by design, deferred until due: not redeliveries)
            if delivered > 1 and observe is not None and consumer != "orchestrator-timer":
                observe.redelivered()
            try:
                message = decoder.decode(raw.data)
            except msgspec.DecodeError as exc:
                outcome = _DeadLetter("undecodable")
                await bus.dead_letter(raw, f"undecodable: {exc}")
                await raw.term()
                return
            delivery = Delivery(message, raw.subject, delivered, raw)
            if not bus.tracing:
                _carry_trace(raw.headers)  # this task's own context: what it publishes carries them on
                outcome = await _run(handler, delivery, log)
            else:
                outcome, exemplar = await _traced(bus, spec.durable, raw, delivery, handler, log)
            match outcome:
                case "ack":
                    await raw.ack()
                case Defer(delay_s=delay):
                    await raw.nak(delay=max(0.001, delay))
                case _DeadLetter(reason=reason):
                    await bus.dead_letter(raw, reason)
                    await raw.term()
                case _Retry(reason=reason) if delivered >= max_deliver:
                    await bus.dead_letter(raw, f"delivery limit {max_deliver} reached: {reason}")
                    await raw.term()
                case _Retry():
                    await raw.nak(delay=backoff[min(delivered - 1, len(backoff) - 1)])
        finally:
            limit.release()
            if observe is not None and outcome is not None:
                observe(outcome, delivered >= max_deliver, started, exemplar)

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


async def _traced(
    bus: Bus,
    group: str,
    raw: Msg,
    delivery: Delivery[T],
    handler: Callable[[Delivery[T]], Awaitable[Ack | Defer]],
    log: Any,
) -> tuple[_Outcome, dict[str, str] | None]:
    """``_run`` inside a consumer span, the publisher's trace context its parent; and the exemplar."""
    template = subject_template(raw.subject)
    with bus.tracer.start_as_current_span(
        f"process {template}",
        context=propagate.extract(dict(raw.headers or {})),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": raw.subject,
            "messaging.destination.template": template,
            "messaging.consumer.group.name": group,
            "messaging.message.delivery_count": delivery.delivered,
            "trigreason.message_type": type(delivery.message).__name__,
        },
    ):
        return await _run(handler, delivery, log), trace_exemplar()


# The W3C trace context and baggage headers (the default propagators'), carried through a service that
# makes no spans: set per handled message, in its task's own context.
_TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
_carried_trace: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "trigreason_carried_trace", default=None
)


def _carry_trace(headers: Mapping[str, str] | None) -> None:
    carried = {k: headers[k] for k in _TRACE_HEADERS if k in headers} if headers else None
    _carried_trace.set(carried or None)


class _Observer:
    """A consumer's handling metrics, with their label values bound once (``labels()`` per message was
    a visible share of a service's CPU)."""

    def __init__(self, metrics: ServiceMetrics, consumer: str) -> None:
        self._metrics = metrics
        self._consumer = consumer
        self._handled: dict[str, Any] = {}  # by outcome, made on first use (no series before it happens)
        self._seconds: Any = None

    def redelivered(self) -> None:
        self._metrics.redeliveries.labels(self._consumer).inc()  # rare: not worth binding

    def __call__(
        self, outcome: _Outcome, last_delivery: bool, started: float, exemplar: dict[str, str] | None
    ) -> None:
        match outcome:
            case "ack":
                name = "ack"
            case Defer():
                name = "defer"
            case _Retry():
                name = "dead_letter" if last_delivery else "retry"
            case _:
                name = "dead_letter"
        counter = self._handled.get(name)
        if counter is None:
            counter = self._handled[name] = self._metrics.handled.labels(self._consumer, name)
        counter.inc()
        if name != "defer":  # a timer that is not due yet did no work
            if self._seconds is None:
                self._seconds = self._metrics.handle_seconds.labels(self._consumer)
            self._seconds.observe(time.perf_counter() - started, exemplar)


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


async def _run(
    handler: Callable[[Delivery[T]], Awaitable[Ack | Defer]], delivery: Delivery[T], log: Any
) -> _Outcome:
    try:
        result = await handler(delivery)
    except StaleEvent as exc:
        log.info("stale_event_dropped", reason=exc.message)
        return "ack"
    except TrigReasonError as exc:
        if exc.retryable:
            log.warning("retryable_error", code=exc.code, error=exc.message)
            return _Retry(f"{exc.code}: {exc.message}")
        log.error("non_retryable_error", code=exc.code, error=exc.message)
        return _DeadLetter(f"{exc.code}: {exc.message}")
    except Exception as exc:
        log.exception("handler_crashed")
        return _Retry(f"{type(exc).__name__}: {exc}")
    return _Retry("handler asked for a retry") if result == "retry" else result
