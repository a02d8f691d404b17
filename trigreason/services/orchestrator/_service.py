"""The session-orchestrator: the pure ``decide`` wrapped in load snapshot → decide → compare-and-set the
snapshot together with the outputs it owes → publish them with deterministic ids (outbox pattern).

A crash anywhere is safe: before the CAS nothing happened and the event is redelivered; after it, the
redelivered event is stale for the new snapshot, and its outbox is published again, which JetStream
de-duplicates by message id.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import msgspec
import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from trigreason.core import Output, StaleEvent, TrigReasonError, decide, initial_state
from trigreason.core.transitions import OrchestratorEvent
from trigreason.proto import (
    GenerateStep,
    SessionFailed,
    SessionFinished,
    SessionRequested,
    SessionSnapshot,
    StepCommitted,
    StepFailed,
    StepGenerated,
    TypedDecoder,
    Verdict,
    encode,
)
from trigreason.services._bus import Ack, Bus, Delivery
from trigreason.services._metrics import ServiceMetrics

__all__ = ["Orchestrator", "output_msg_id"]

_CAS_ATTEMPTS = 32
_TERMINAL = frozenset({"finished", "failed"})


def output_msg_id(output: Output) -> str:
    match output:
        case GenerateStep(command_id=cid):
            return cid
        case StepCommitted(session_id=sid, index=index):
            return f"{sid}.committed.{index}"
        case SessionFinished(session_id=sid):
            return f"{sid}.finished"
        case SessionFailed(session_id=sid):
            return f"{sid}.failed"
    raise AssertionError(f"no id for {output!r}")  # pragma: no cover


class Orchestrator:
    consumer = "orchestrator"

    def __init__(self, bus: Bus, metrics: ServiceMetrics | None = None, *, cache_size: int = 4096) -> None:
        self._bus = bus
        self._metrics = metrics or ServiceMetrics()
        self._snapshots = msgspec.json.Decoder(SessionSnapshot)
        self.decoder: TypedDecoder[OrchestratorEvent] = TypedDecoder(
            SessionRequested | StepGenerated | Verdict | StepFailed
        )
        self._log = structlog.get_logger("trigreason.orchestrator")
        # Snapshots this replica wrote last, by session: saves the read before each decision.
        self._cache: OrderedDict[str, tuple[int, SessionSnapshot]] = OrderedDict()
        self._cache_size = cache_size

    async def handle(self, delivery: Delivery[OrchestratorEvent]) -> Ack:
        event = delivery.message
        sid = event.session_id
        kv = self._bus.kv
        for _ in range(_CAS_ATTEMPTS):
            cached = self._cache.pop(sid, None)
            revision: int | None
            if cached is not None:
                revision, state = cached
            else:
                try:
                    entry = await kv.get(sid)
                except KeyNotFoundError:
                    entry = None
                revision = None if entry is None else entry.revision
                state = (
                    initial_state(sid)
                    if entry is None or not entry.value
                    else self._snapshots.decode(entry.value)
                )
            with self._bus.tracer.start_as_current_span(
                "orchestrator decide",
                attributes={"trigreason.session_id": sid, "trigreason.event": type(event).__name__},
            ) as span:
                try:
                    new_state, outputs = decide(state, event)
                except TrigReasonError as exc:
                    if cached is not None:
                        continue  # judged on a cached snapshot that may be behind: judge on the stored one
                    if isinstance(exc, StaleEvent):
                        await self._publish(state.outbox)  # finish what a crash may have interrupted
                    raise
                span.set_attribute("trigreason.phase", new_state.phase)
                span.set_attribute("trigreason.steps", len(new_state.steps))
            new_state = msgspec.structs.replace(new_state, outbox=outputs)
            try:
                if revision is None:
                    revision = await kv.create(sid, encode(new_state))
                else:
                    revision = await kv.update(sid, encode(new_state), last=revision)
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                continue  # another replica moved the session on: decide again on the stored snapshot
            if new_state.phase not in _TERMINAL:
                self._remember(sid, revision, new_state)
            await self._publish(outputs)
            self._record(state, new_state, outputs)
            return "ack"
        raise TrigReasonError(f"session {sid}: snapshot contention", code="cas_contention", retryable=True)

    def _remember(self, sid: str, revision: int, state: SessionSnapshot) -> None:
        # The compare-and-set validates a cached snapshot, so a stale one costs a retry, never a wrong step.
        self._cache[sid] = (revision, state)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _record(self, before: SessionSnapshot, after: SessionSnapshot, outputs: tuple[Output, ...]) -> None:
        m = self._metrics
        for kind, count in after.counters.triggers.items():
            fired = count - before.counters.triggers.get(kind, 0)
            if fired > 0:
                m.triggers.labels(kind).inc(fired)
        for out in outputs:
            if isinstance(out, StepCommitted):
                m.steps.labels(out.role).inc()
            elif isinstance(out, SessionFinished):
                m.sessions.labels("finished").inc()
                m.srm_token_ratio.observe(out.stats.srm_token_ratio)
            elif isinstance(out, SessionFailed):
                m.sessions.labels("failed").inc()

    async def _publish(self, outputs: tuple[Output, ...]) -> None:
        # Events keep their order on the session's subject; commands go out alongside them.
        events = [out for out in outputs if not isinstance(out, GenerateStep)]
        commands = [out for out in outputs if isinstance(out, GenerateStep)]

        async def in_order() -> None:
            for out in events:
                await self._publish_one(out)

        await asyncio.gather(in_order(), *(self._publish_one(c) for c in commands))

    async def _publish_one(self, out: Output) -> None:
        attrs: dict[str, str | int] = {}
        if isinstance(out, GenerateStep):
            attrs = {"trigreason.step_index": out.step_index, "trigreason.role": out.role}
            if out.trigger:
                attrs["trigreason.trigger"] = out.trigger
        elif isinstance(out, StepCommitted):
            attrs = {
                "trigreason.step_index": out.index,
                "trigreason.role": out.role,
                "trigreason.tokens": out.tokens,
            }
        await self._bus.publish(out, msg_id=output_msg_id(out), attributes=attrs)
