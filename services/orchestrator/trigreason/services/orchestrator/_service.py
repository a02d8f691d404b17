"""The session-orchestrator: the pure ``decide`` wrapped in load snapshot → decide → compare-and-set the
snapshot together with the outputs it owes → publish them with deterministic ids (outbox pattern).

A crash anywhere is safe: before the CAS nothing happened and the event is redelivered; after it, the
redelivered event is stale for the new snapshot. If it is the very event that caused the stored outbox,
what of the outbox is not on the bus yet is published again (checked against the event stream, so a late
redelivery after JetStream's duplicate window re-emits nothing). Any other stale event publishes nothing.

The same service runs each session's deadline timer: a ``DeadlineReached`` message waits, unacknowledged,
on the timer work queue and is handed to ``decide`` once it is due (the session then fails, unless it
ended before).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec
import structlog
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError, NotFoundError

from trigreason.proto import (
    EVENT_STREAM,
    CloudUnavailable,
    ConsumerName,
    DeadlineReached,
    GenerateStep,
    MessageDeadLettered,
    SessionFailed,
    SessionFinished,
    SessionRequested,
    SessionSnapshot,
    StaleEvent,
    StepCommitted,
    StepFailed,
    StepGenerated,
    TrigReasonError,
    TypedDecoder,
    Verdict,
    decode_message,
    encode,
    event_kind,
    event_subject,
)
from trigreason.services.runtime import (
    Ack,
    Bus,
    CloudLink,
    ConsumerBinding,
    Defer,
    Delivery,
    ServiceMetrics,
)
from trigreason.services.trigger_evaluator.policies import PolicyError, PolicyRegistry

from .transitions import OrchestratorEvent, Output, decide, initial_state

__all__ = ["Orchestrator", "event_key", "output_msg_id"]

_CAS_ATTEMPTS = 32
_TERMINAL = frozenset({"finished", "failed"})
# A timer that is not due yet is looked at again after at most this long: a session that ended meanwhile
# has its timer dropped then, so the timer queue holds about one timer per running session, and
# trigreason_sessions_in_flight (read from it) counts at most this long of ended sessions too. One snapshot
# read per running session per period.
_TIMER_RECHECK_S = 30.0


def output_msg_id(output: Output) -> str:
    match output:
        case GenerateStep(command_id=cid):
            return cid
        case DeadlineReached(session_id=sid):
            return f"{sid}.deadline"
        case StepCommitted(session_id=sid, index=index):
            return f"{sid}.committed.{index}"
        case SessionFinished(session_id=sid):
            return f"{sid}.finished"
        case SessionFailed(session_id=sid):
            return f"{sid}.failed"
    raise AssertionError(f"no id for {output!r}")  # pragma: no cover


def event_key(event: OrchestratorEvent) -> str:
    """Names the event that caused an outbox: the same message redelivered has the same key."""
    match event:
        case SessionRequested():
            return "requested"
        case Verdict(candidate=candidate):
            return f"verdict:{candidate.command_id}"
        case StepGenerated(command_id=cid) | StepFailed(command_id=cid):
            return f"out:{cid}"
        case DeadlineReached():
            return "deadline"
        case MessageDeadLettered(origin_subject=subject, command_id=cid):
            return f"dead:{subject}:{cid}"
        case CloudUnavailable(command_id=cid):
            return f"cloud:{cid}"
    raise AssertionError(f"no key for {event!r}")  # pragma: no cover


class Orchestrator:
    consumer: ConsumerName = "orchestrator"
    timer_consumer: ConsumerName = "orchestrator-timer"

    def __init__(
        self,
        bus: Bus,
        metrics: ServiceMetrics | None = None,
        *,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
        policies: PolicyRegistry | None = None,
    ) -> None:
        self._bus = bus
        # The built-in policies and those named in TRIGREASON_POLICY_MODULES.
        self._policies = policies or PolicyRegistry.from_env()
        self._metrics = metrics or ServiceMetrics()
        self._clock = clock
        self._snapshots = msgspec.json.Decoder(SessionSnapshot)
        self.decoder: TypedDecoder[OrchestratorEvent] = TypedDecoder(
            SessionRequested | StepGenerated | Verdict | StepFailed | MessageDeadLettered | CloudUnavailable,
            check=self._check,
        )
        self.timer_decoder: TypedDecoder[DeadlineReached] = TypedDecoder(DeadlineReached)
        self._log = structlog.get_logger("trigreason.orchestrator")
        # Snapshots this replica wrote last, by session: saves the read before each decision.
        self._cache: OrderedDict[str, tuple[int, SessionSnapshot]] = OrderedDict()
        self._cache_size = cache_size
        # At an edge site (docs/sites.md): whether the cloud answers, for `on_cloud_unavailable`.
        self._link: CloudLink | None = None
        self._link_stop = asyncio.Event()
        self._link_task: asyncio.Task[None] | None = None

    def _check(self, event: OrchestratorEvent) -> OrchestratorEvent:
        """A request's policy must be registered and its parameters valid (else it is dead-lettered with
        the reason, like any undecodable message); a v1 flat request is normalised here."""
        if not isinstance(event, SessionRequested):
            return event
        try:
            return msgspec.structs.replace(event, params=self._policies.normalise(event.params))
        except PolicyError as exc:
            raise msgspec.ValidationError(f"{exc.message} - at `$.params`") from None

    def bindings(self) -> tuple[ConsumerBinding, ...]:
        """The session events, and the sessions' deadline timers."""
        settings = self._bus.settings
        if settings.placement == "edge" and settings.site is not None and self._link_task is None:
            self._link = CloudLink(self._bus.nc, settings.site, on_down=self._cloud_down)
            self._link_task = asyncio.create_task(self._link.run(self._link_stop))
        return (
            ConsumerBinding(self.consumer, self.decoder, self.handle),
            ConsumerBinding(self.timer_consumer, self.timer_decoder, self.handle_timer),
        )

    async def aclose(self) -> None:
        self._link_stop.set()
        if self._link_task is not None:
            await asyncio.gather(self._link_task, return_exceptions=True)

    async def _cloud_down(self) -> None:
        """The cloud stopped answering: every session waiting for an LRM step that asked not to wait is
        told so (any replica may do it: the message ids make the notices of several replicas one)."""
        try:
            keys = await self._bus.kv.keys()
        except NoKeysError:
            return
        for sid in keys:
            try:
                _, state = await self._load(sid)
            except Exception:  # an unreadable snapshot is the consumer's business, not the link's
                continue
            await self._cloud_unavailable(state)

    async def _cloud_unavailable(self, state: SessionSnapshot) -> None:
        """``on_cloud_unavailable`` for one session while the cloud is down: ``fail`` fails the awaited LRM
        step at once (code ``cloud_unavailable``); ``wait`` lets it wait for the WAN, within the deadline."""
        if state.phase != "awaiting_lrm" or state.awaiting is None:
            return
        if state.params.on_cloud_unavailable == "fail":
            notice = StepFailed(
                session_id=state.session_id,
                command_id=state.awaiting,
                step_index=len(state.steps),
                role="lrm",
                code="cloud_unavailable",
                message="the cloud does not answer and the request said on_cloud_unavailable=fail",
                at=self._clock(),
            )
            await self._bus.publish(notice, msg_id=f"{state.awaiting}.cloud_unavailable")
        elif state.params.on_cloud_unavailable == "srm":
            fallback = CloudUnavailable(
                session_id=state.session_id, command_id=state.awaiting, at=self._clock()
            )
            await self._bus.publish(fallback, msg_id=f"{state.awaiting}.cloud_unavailable")

    async def handle_timer(self, delivery: Delivery[DeadlineReached]) -> Ack | Defer:
        """A session's deadline timer: wait until it is due, then let ``decide`` fail the session."""
        timer = delivery.message
        left = timer.deadline_at - self._clock()
        if left > 0:
            # The first delivery comes right after the session started (the timer is in its first outbox):
            # it waits without reading the snapshot back, which saved a KV read per session
            # (bench_throughput --quick: 3.5% of the orchestrator's profile). Later ones check the store.
            if delivery.delivered > 1:
                _, state = await self._load(timer.session_id)
                if state.phase in _TERMINAL:
                    return "ack"  # the session ended in time: the timer is done
            return Defer(min(left, _TIMER_RECHECK_S))
        return await self._apply(timer)

    async def handle(self, delivery: Delivery[OrchestratorEvent]) -> Ack:
        event = delivery.message
        if isinstance(event, SessionRequested) and event.requested_at <= 0:
            # Not stamped by its publisher: the deadline counts from when this service first sees it.
            event = msgspec.structs.replace(event, requested_at=self._clock())
        return await self._apply(event)

    async def _load(self, sid: str) -> tuple[int | None, SessionSnapshot]:
        try:
            entry = await self._bus.kv.get(sid)
        except KeyNotFoundError:
            entry = None
        if entry is None or not entry.value:
            return None, initial_state(sid)
        return entry.revision, self._snapshots.decode(entry.value)

    async def _apply(self, event: OrchestratorEvent) -> Ack:
        sid = event.session_id
        kv = self._bus.kv
        for _ in range(_CAS_ATTEMPTS):
            cached = self._cache.pop(sid, None)
            revision: int | None
            if cached is not None:
                revision, state = cached
            else:
                revision, state = await self._load(sid)
            with self._bus.span(
                "orchestrator decide",
                attributes={"trigreason.session_id": sid, "trigreason.event": type(event).__name__},
            ) as span:
                try:
                    new_state, outputs = decide(state, event, self._policies)
                except TrigReasonError as exc:
                    if cached is not None:
                        continue  # judged on a cached snapshot that may be behind: judge on the stored one
                    if isinstance(exc, StaleEvent) and state.outbox_cause == event_key(event):
                        await self._republish(state.outbox)  # finish what a crash may have interrupted
                    raise
                span.set_attribute("trigreason.phase", new_state.phase)
                span.set_attribute("trigreason.steps", len(new_state.steps))
            new_state = msgspec.structs.replace(new_state, outbox=outputs, outbox_cause=event_key(event))
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
            if self._link is not None and not self._link.up:
                await self._cloud_unavailable(new_state)  # an LRM step asked for while the cloud is down
            return "ack"
        raise TrigReasonError(f"session {sid}: snapshot contention", code="cas_contention", retryable=True)

    def _remember(self, sid: str, revision: int, state: SessionSnapshot) -> None:
        # The compare-and-set validates a cached snapshot, so a stale one costs a retry, never a wrong step.
        self._cache[sid] = (revision, state)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _record(self, before: SessionSnapshot, after: SessionSnapshot, outputs: tuple[Output, ...]) -> None:
        """The session metrics of one decision: what its counters moved by, and what it emitted."""
        m = self._metrics
        policy = str(after.params.policy)
        exemplar = self._bus.exemplar()
        now = self._clock()
        elapsed = max(0.0, now - after.requested_at) if after.requested_at > 0 else None
        if before.phase == "new" and after.phase != "new":
            m.sessions_started.labels(policy).inc()
        was, now_c = before.counters, after.counters
        for kind, count in now_c.triggers.items():
            fired = count - was.triggers.get(kind, 0)
            if fired > 0:
                m.triggers.labels(policy, kind).inc(fired)
        if (wasted := now_c.srm_wasted_tokens - was.srm_wasted_tokens) > 0:
            m.srm_wasted_tokens.labels(policy).inc(wasted)
        prompt = max(0, now_c.lrm_prompt_tokens - was.lrm_prompt_tokens)
        cached = max(0, now_c.lrm_cached_prompt_tokens - was.lrm_cached_prompt_tokens)
        # Every LRM generation is committed; each judge or scoring call adds its one generated token (as
        # eval's cost); a scoring call's prefill is in the prompt tokens.
        calls = now_c.judge_calls - was.judge_calls + now_c.score_calls - was.score_calls
        output = max(0, now_c.lrm_tokens - was.lrm_tokens) + max(0, calls)
        for kind, tokens in (("prompt", prompt), ("cached_prompt", cached), ("output", output)):
            if tokens:
                m.lrm_tokens.labels(policy, kind).inc(tokens)
        if prompt or output:
            m.lrm_cost.labels(policy).inc(m.prices.cost_usd(prompt=prompt, cached=cached, output=output))
        for out in outputs:
            if isinstance(out, StepCommitted):
                m.steps.labels(policy, out.role).inc()
                if out.index == 0 and elapsed is not None:
                    m.first_step.labels(policy).observe(elapsed, exemplar)
            elif isinstance(out, SessionFinished):
                m.sessions.labels(policy, "finished", out.reason).inc()
                m.srm_token_ratio.labels(policy).observe(out.stats.srm_token_ratio)
                if elapsed is not None:
                    m.session_duration.labels(policy, "finished").observe(elapsed, exemplar)
            elif isinstance(out, SessionFailed):
                m.sessions.labels(policy, "failed", out.code).inc()
                if elapsed is not None:
                    m.session_duration.labels(policy, "failed").observe(elapsed, exemplar)

    async def _republish(self, outputs: tuple[Output, ...]) -> None:
        """Publish what of an outbox is not on the event stream yet (commands and timers: all of it; a
        repeated command costs a stale answer, never a second step)."""
        missing = [out for out in outputs if not await self._on_stream(out)]
        if missing:
            self._log.info("outbox_republished", session_id=outputs[0].session_id, count=len(missing))
            await self._publish(tuple(missing))

    async def _on_stream(self, out: Output) -> bool:
        if isinstance(out, GenerateStep | DeadlineReached):
            return False
        subject = event_subject(out.session_id, event_kind(out))
        try:
            last = await self._bus.js.get_last_msg(EVENT_STREAM, subject)
        except NotFoundError:
            return False
        if isinstance(out, StepCommitted):
            stored = decode_message(last.data or b"")
            return isinstance(stored, StepCommitted) and stored.index >= out.index
        return True  # a session's terminal event exists at most once on its subject

    async def _publish(self, outputs: tuple[Output, ...]) -> None:
        """Events first, in order on the session's subject; the commands only once they are stored.

        Were a command published beside a ``StepCommitted`` that then failed (a stream leader lost
        mid-publish), the session could move on and the redelivery of this event would be stale for a newer
        outbox: the step would be missing from the history for good (found by make chaos, 3-node cluster).
        """
        events = [out for out in outputs if not isinstance(out, GenerateStep | DeadlineReached)]
        commands = [out for out in outputs if isinstance(out, GenerateStep | DeadlineReached)]
        for out in events:
            await self._publish_one(out)
        if len(commands) == 1:  # the usual case: no task to make
            await self._publish_one(commands[0])
        elif commands:
            await asyncio.gather(*(self._publish_one(c) for c in commands))

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
