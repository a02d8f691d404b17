"""A session's events as a reader sees them: the feed (an ordered consumer that survives nats-server
restarts), what a reader has already passed on, and the writer of a long-lived response."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import structlog
from aiohttp import web
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from trigreason.proto import EVENT_STREAM, Message, decode_message, event_subject
from trigreason.services.runtime import Bus

__all__ = [
    "TICK_S",
    "ClientGone",
    "Event",
    "Feed",
    "Seen",
    "Writer",
    "decode_event",
    "last_sequence",
    "next_event",
    "read_to",
]

TICK_S = 1.0  # how often a waiting stream looks whether its client is still there
_TERMINAL = ("finished", "failed")
_PROBE_S = 10.0  # how long a feed waits for an event before it asks whether its consumer is still there
_RESUBSCRIBE_S = 30.0  # how long a feed tries to get its subscription back before its stream ends

log = structlog.get_logger("trigreason.gateway")


class ClientGone(Exception):
    """The client closed the connection of a long-lived request."""


class _Indexed(msgspec.Struct):
    index: int


@dataclass(frozen=True, slots=True)
class Event:
    seq: int  # the event stream's sequence: the SSE id
    kind: str  # the last subject token: requested, committed, finished, failed
    data: bytes


class Feed:
    """A session's events from the start, read by a task into a queue: a reader can wait with a timeout
    (keep-alives, client checks) without cancelling the subscription.

    The subscription is an ephemeral ordered consumer, which a nats-server restart loses, and nats-py only
    recreates one after two missed idle heartbeats (10 s), and tries once each time. So the feed keeps it
    itself: when the connection has reconnected since it subscribed, or the consumer is not there when
    asked after ``_PROBE_S`` without an event, it subscribes again from the stream sequence after the last
    event it queued; every event is queued once, in order. Past ``_RESUBSCRIBE_S`` without a subscription it
    hands the reader an error: the stream ends and the client resumes with Last-Event-ID."""

    def __init__(self, bus: Bus, session_id: str) -> None:
        self._bus = bus
        self._session_id = session_id
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue(maxsize=256)
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._last = 0  # the stream sequence of the last event queued
        self._reconnects = 0  # the connection's reconnect count when the subscription was made
        self._checked = 0.0  # monotonic: the last event, subscription or probe

    async def __aenter__(self) -> Feed:
        await self._subscribe()
        self._task = asyncio.create_task(self._pump())
        return self

    async def _subscribe(self) -> None:
        if self._last:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._last + 1
            )
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        # Read before subscribing: a reconnect while the consumer is made is one more, and is seen.
        self._reconnects = self._bus.nc.stats["reconnects"]
        self._sub = await self._bus.js.subscribe(
            event_subject(self._session_id, ">"), ordered_consumer=True, config=config
        )
        self._checked = time.monotonic()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _lost(self) -> bool:
        """Whether the subscription may have lost its consumer: the connection reconnected since, or the
        consumer does not answer (asked at most every ``_PROBE_S``, only while no event comes)."""
        if self._bus.nc.stats["reconnects"] != self._reconnects:
            return True
        if time.monotonic() - self._checked < _PROBE_S:
            return False
        self._checked = time.monotonic()
        try:
            await self._sub.consumer_info()
        except NotFoundError:
            return True
        except (nats.errors.Error, TimeoutError, ConnectionError):
            return not self._bus.nc.is_connected  # reconnecting: the count tells once it is back
        return False

    async def _resubscribe(self) -> None:
        await self._unsubscribe()
        deadline = time.monotonic() + _RESUBSCRIBE_S
        delay = 0.25
        while True:
            try:
                await self._subscribe()
            except (nats.errors.Error, TimeoutError, ConnectionError) as exc:
                if time.monotonic() + delay >= deadline:
                    raise ConnectionError(
                        f"the event subscription could not be restored within {_RESUBSCRIBE_S:g} s"
                    ) from exc
                log.info("event_resubscribe_retry", session_id=self._session_id, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)
            else:
                log.info("event_resubscribed", session_id=self._session_id, after_seq=self._last)
                return

    async def _pump(self) -> None:
        try:
            while True:
                try:
                    msg = await self._sub.next_msg(timeout=TICK_S)
                except nats.errors.TimeoutError:
                    if await self._lost():
                        await self._resubscribe()
                    continue
                seq = msg.metadata.sequence.stream
                if seq <= self._last:  # a new consumer's overlap with what was queued
                    continue
                self._last = seq
                self._checked = time.monotonic()
                kind = msg.subject.rsplit(".", 1)[1]
                await self._queue.put(Event(seq, kind, msg.data))
        except Exception as exc:  # handed to the reader, which ends its stream
            await self._queue.put(exc)

    async def next(self, wait_s: float) -> Event | None:
        """The next event, or None when none came within ``wait_s`` (the subscription stays)."""
        try:
            item = await asyncio.wait_for(self._queue.get(), wait_s)
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._unsubscribe()


class Seen:
    """What a reader has passed on: each step index once, one request, and only the first terminal event
    (a redelivery outside JetStream's duplicate window can publish an event twice)."""

    def __init__(self) -> None:
        self.indexes: set[int] = set()
        self.requested = False
        self.ended = False

    def fresh(self, ev: Event) -> bool:
        if self.ended:
            return False
        if ev.kind == "committed":
            try:
                index = msgspec.json.decode(ev.data, type=_Indexed).index
            except msgspec.DecodeError:
                return False
            if index in self.indexes:
                return False
            self.indexes.add(index)
        elif ev.kind == "requested":
            if self.requested:
                return False
            self.requested = True
        elif ev.kind in _TERMINAL:
            self.ended = True
        return True


class Writer:
    """A prepared streaming response: writes, and tells when the client left or a keep-alive is due."""

    def __init__(self, request: web.Request, resp: web.StreamResponse | None) -> None:
        self.request = request
        self.resp = resp
        self.last = time.monotonic()

    def gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    async def write(self, data: bytes) -> None:
        if self.resp is None:
            self.last = time.monotonic()
            return
        try:
            await self.resp.write(data)
        except ConnectionError as exc:
            raise ClientGone from exc
        self.last = time.monotonic()


async def next_event(feed: Feed, out: Writer, *, keepalive_s: float, deadline: float | None = None) -> Event:
    """The feed's next event, however long it takes: a keep-alive comment after ``keepalive_s`` without a
    write, ``ClientGone`` when the client left, ``TimeoutError`` past ``deadline`` (monotonic)."""
    while True:
        if out.gone():
            raise ClientGone
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise TimeoutError
        wait = min(TICK_S, keepalive_s, max(0.0, out.last + keepalive_s - now))
        if deadline is not None:
            wait = min(wait, deadline - now)
        ev = await feed.next(max(wait, 0.01))
        if ev is not None:
            return ev
        if time.monotonic() - out.last >= keepalive_s:
            await out.write(b": keep-alive\n\n")


def decode_event(ev: Event) -> Message | None:
    """The event's message; None (logged) for bytes that are no message."""
    try:
        return decode_message(ev.data)
    except (msgspec.DecodeError, ValueError):
        log.warning("undecodable_event", seq=ev.seq, kind=ev.kind)
        return None


async def last_sequence(bus: Bus, session_id: str) -> int | None:
    """The event stream's sequence of the session's last event now; None when it has none (unknown, or
    expired with the stream's age limit)."""
    try:
        msg = await bus.js.get_last_msg(EVENT_STREAM, event_subject(session_id, ">"))
    except NotFoundError:
        return None
    return msg.seq


async def read_to(bus: Bus, session_id: str, last: int) -> list[Event]:
    """The session's events up to the stream sequence ``last``, read through a feed (which rides out a
    nats-server restart); it does not wait for more."""
    events: list[Event] = []
    async with Feed(bus, session_id) as feed:
        while not events or events[-1].seq < last:
            ev = await feed.next(_RESUBSCRIBE_S + _PROBE_S)
            if ev is None:
                raise TimeoutError(f"the events of session {session_id} did not come")
            events.append(ev)
    return events
