"""The bus vocabulary, in one place: stream, subject, consumer and bucket names.

Everything else derives from it: ``runtime``'s topology creates these streams and consumers, the NATS
permissions (``_permissions.py``, rendered into ``infra/nats/auth.conf`` and the chart's values) grant
them, the chaos suite and the benchmarks subscribe and inject with them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from ._v1 import (
    CloudUnavailable,
    DeadlineReached,
    GenerateStep,
    JudgeScored,
    JudgeStep,
    Message,
    MessageDeadLettered,
    Role,
    SessionFailed,
    SessionFinished,
    SessionRequested,
    StepCommitted,
    StepFailed,
    StepGenerated,
    Verdict,
)

__all__ = [
    "ALL_SUBJECTS",
    "BACKEND_BUCKET",
    "BACKEND_KV_STREAM",
    "COMMAND_STREAM",
    "CONSUMERS",
    "DEAD_LETTER_STREAM",
    "EVENT_KINDS",
    "EVENT_STREAM",
    "KV_STREAM",
    "ROLES",
    "SESSION_BUCKET",
    "STREAMS",
    "TIMER_STREAM",
    "ConsumerName",
    "ConsumerSpec",
    "EventKind",
    "StreamSpec",
    "answered_command",
    "command_subject",
    "dead_letter_subject",
    "event_filter",
    "event_kind",
    "event_subject",
    "judge_command_id",
    "parse_subject",
    "session_events",
    "subject_for",
    "subject_template",
    "timer_subject",
]

# Work queue of commands: one subject per role, one durable pull consumer per role shared by replicas.
COMMAND_STREAM: Final = "TRIG_CMD"
# Limits stream of events on per-session subjects: the session's full, ordered, replayable history.
EVENT_STREAM: Final = "TRIG_EVT"
DEAD_LETTER_STREAM: Final = "TRIG_DLQ"
SESSION_BUCKET: Final = "trig_sessions"
# Work queue of session deadline timers (trig.timer.<session>): each waits, unacknowledged, until it is due.
TIMER_STREAM: Final = "TRIG_TIMER"
# The stream behind the KV bucket of session snapshots (JetStream names it so).
KV_STREAM: Final = f"KV_{SESSION_BUCKET}"
# What each role's inference server accepts (BackendLimits under the key <role>): its workers write it at
# start, the gateway reads it to refuse up front what the server would refuse.
BACKEND_BUCKET: Final = "trig_backends"
BACKEND_KV_STREAM: Final = f"KV_{BACKEND_BUCKET}"

_ROOT: Final = "trig"
# Every subject of the project (an observer's subscription: the benchmarks, the chaos suite).
ALL_SUBJECTS: Final = f"{_ROOT}.>"
ROLES: Final[tuple[Role, ...]] = ("srm", "lrm")

# The last token of an event's subject (trig.evt.<session>.<kind>).
EventKind = Literal[
    "requested",
    "srm_step",
    "lrm_step",
    "step_failed",
    "judged",
    "verdict",
    "committed",
    "finished",
    "failed",
    "dead_lettered",
    "cloud_unavailable",
]
EVENT_KINDS: Final[tuple[EventKind, ...]] = get_args(EventKind)  # in declaration order

_EVENT_KINDS: Final[dict[type[Message], EventKind]] = {
    SessionRequested: "requested",
    StepFailed: "step_failed",
    JudgeScored: "judged",
    Verdict: "verdict",
    StepCommitted: "committed",
    SessionFinished: "finished",
    SessionFailed: "failed",
    MessageDeadLettered: "dead_lettered",
    CloudUnavailable: "cloud_unavailable",
}


def command_subject(role: Role | Literal["*", ">"]) -> str:
    """The work-queue subject of a role's commands (``command_subject(">")``: all of them)."""
    return f"{_ROOT}.cmd.{role}"


def event_kind(message: Message) -> EventKind:
    """The last subject token of an event: SRM and LRM steps go to different consumers."""
    if isinstance(message, StepGenerated):
        return "srm_step" if message.role == "srm" else "lrm_step"
    return _EVENT_KINDS[type(message)]


def timer_subject(session_id: str) -> str:
    return f"{_ROOT}.timer.{session_id}"


def event_subject(session_id: str, kind: str) -> str:
    """``trig.evt.<session>.<kind>``; either may be a wildcard (``*``, or ``>`` for ``kind``)."""
    return f"{_ROOT}.evt.{session_id}.{kind}"


def event_filter(kind: EventKind | Literal["*", ">"]) -> str:
    """Events of one kind in every session (``trig.evt.*.<kind>``)."""
    return event_subject("*", kind)


def session_events(session_id: str) -> str:
    """Every event of one session, in order (``trig.evt.<session>.>``); ``">"``: of every session."""
    return f"{_ROOT}.evt.>" if session_id == ">" else event_subject(session_id, ">")


def subject_for(message: Message) -> str:
    """Where a message is published."""
    if isinstance(message, GenerateStep):
        return command_subject(message.role)
    if isinstance(message, JudgeStep):
        return command_subject("lrm")
    if isinstance(message, DeadlineReached):
        return timer_subject(message.session_id)
    return event_subject(message.session_id, event_kind(message))


def dead_letter_subject(origin_subject: str) -> str:
    """Where a message that cannot be handled goes (``dead_letter_subject(">")``: all of them)."""
    return f"{_ROOT}.dlq.{origin_subject}"


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamSpec:
    """A stream of the layout: its name, the subjects it holds and its retention."""

    name: str
    subjects: tuple[str, ...]
    work_queue: bool  # each message is removed once acknowledged; else kept by limits (age, bytes)


STREAMS: Final[Mapping[str, StreamSpec]] = {
    s.name: s
    for s in (
        StreamSpec(name=COMMAND_STREAM, subjects=(command_subject(">"),), work_queue=True),
        StreamSpec(name=TIMER_STREAM, subjects=(timer_subject(">"),), work_queue=True),
        StreamSpec(name=EVENT_STREAM, subjects=(session_events(">"),), work_queue=False),
        StreamSpec(name=DEAD_LETTER_STREAM, subjects=(dead_letter_subject(">"),), work_queue=False),
    )
}

ConsumerName = Literal["srm-worker", "lrm-worker", "orchestrator", "orchestrator-timer", "trigger-evaluator"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer, shared by all replicas of the service that pulls from it."""

    stream: str
    durable: ConsumerName
    subjects: tuple[str, ...]
    max_deliver: int | None = None  # None: the bus settings' max_deliver; -1: unlimited (timers)


# One durable pull consumer per role, shared by all of that role's replicas: adding replicas scales it.
CONSUMERS: Final[Mapping[ConsumerName, ConsumerSpec]] = {
    "srm-worker": ConsumerSpec(
        stream=COMMAND_STREAM, durable="srm-worker", subjects=(command_subject("srm"),)
    ),
    "lrm-worker": ConsumerSpec(
        stream=COMMAND_STREAM, durable="lrm-worker", subjects=(command_subject("lrm"),)
    ),
    "orchestrator": ConsumerSpec(
        stream=EVENT_STREAM,
        durable="orchestrator",
        subjects=tuple(
            event_filter(k)
            for k in ("requested", "lrm_step", "verdict", "step_failed", "dead_lettered", "cloud_unavailable")
        ),
    ),
    # Deadline timers: each is handed back (``Defer``) until due, so deliveries are not failures.
    "orchestrator-timer": ConsumerSpec(
        stream=TIMER_STREAM, durable="orchestrator-timer", subjects=(timer_subject(">"),), max_deliver=-1
    ),
    "trigger-evaluator": ConsumerSpec(
        stream=EVENT_STREAM,
        durable="trigger-evaluator",
        subjects=(event_filter("srm_step"), event_filter("judged")),
    ),
}


_JUDGE_SUFFIX: Final = ".judge"


def judge_command_id(generate_command_id: str) -> str:
    """SpecReason: the id of the judge call on the SRM step that ``generate_command_id`` produced."""
    return generate_command_id + _JUDGE_SUFFIX


def answered_command(command_id: str) -> str:
    """The orchestrator's command that ``command_id`` works on: a judge call serves its SRM step."""
    return command_id.removesuffix(_JUDGE_SUFFIX)


def parse_subject(subject: str) -> tuple[str, str | None, str | None]:
    """(family, session, event kind) of a subject of the layout: ``trig.evt.s1.verdict`` gives
    ``("evt", "s1", "verdict")``, ``trig.timer.s1`` ``("timer", "s1", None)``, ``trig.cmd.srm``
    ``("cmd", None, None)``; a dead letter's family is ``dlq``; anything else ``("", None, None)``."""
    tokens = subject.split(".")
    if len(tokens) < 3 or tokens[0] != _ROOT:
        return "", None, None
    family = tokens[1]
    if family == "evt" and len(tokens) == 4:
        return family, tokens[2], tokens[3]
    if family == "timer" and len(tokens) == 3:
        return family, tokens[2], None
    return family, None, None


def subject_template(subject: str) -> str:
    """``subject`` with its session token replaced by ``{session}``: a name of low cardinality for spans
    and metrics (``trig.evt.{session}.committed``), where the concrete subject would name one per session."""
    tokens = subject.split(".")
    if tokens[:2] == [_ROOT, "dlq"]:
        return dead_letter_subject(subject_template(".".join(tokens[2:])))
    if tokens[:2] in ([_ROOT, "evt"], [_ROOT, "timer"]) and len(tokens) >= 3:
        tokens[2] = "{session}"
    return ".".join(tokens)
