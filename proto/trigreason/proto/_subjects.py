"""JetStream layout: stream, subject, consumer and bucket names, in one place."""

from __future__ import annotations

from typing import Final

from ._v1 import (
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
    "COMMAND_STREAM",
    "DEAD_LETTER_STREAM",
    "EVENT_STREAM",
    "SESSION_BUCKET",
    "TIMER_STREAM",
    "answered_command",
    "command_subject",
    "dead_letter_subject",
    "event_kind",
    "event_subject",
    "judge_command_id",
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

_EVENT_KINDS: Final[dict[type[Message], str]] = {
    SessionRequested: "requested",
    StepFailed: "step_failed",
    JudgeScored: "judged",
    Verdict: "verdict",
    StepCommitted: "committed",
    SessionFinished: "finished",
    SessionFailed: "failed",
    MessageDeadLettered: "dead_lettered",
}


def command_subject(role: Role) -> str:
    return f"trig.cmd.{role}"


def event_kind(message: Message) -> str:
    """The last subject token of an event: SRM and LRM steps go to different consumers."""
    if isinstance(message, StepGenerated):
        return f"{message.role}_step"
    return _EVENT_KINDS[type(message)]


def timer_subject(session_id: str) -> str:
    return f"trig.timer.{session_id}"


def event_subject(session_id: str, kind: str) -> str:
    return f"trig.evt.{session_id}.{kind}"


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
    return f"trig.dlq.{origin_subject}"


_JUDGE_SUFFIX: Final = ".judge"


def judge_command_id(generate_command_id: str) -> str:
    """SpecReason: the id of the judge call on the SRM step that ``generate_command_id`` produced."""
    return generate_command_id + _JUDGE_SUFFIX


def answered_command(command_id: str) -> str:
    """The orchestrator's command that ``command_id`` works on: a judge call serves its SRM step."""
    return command_id.removesuffix(_JUDGE_SUFFIX)


def subject_template(subject: str) -> str:
    """``subject`` with its session token replaced by ``{session}``: a name of low cardinality for spans
    and metrics (``trig.evt.{session}.committed``), where the concrete subject would name one per session."""
    tokens = subject.split(".")
    if tokens[:2] == ["trig", "dlq"]:
        return "trig.dlq." + subject_template(".".join(tokens[2:]))
    if tokens[:2] in (["trig", "evt"], ["trig", "timer"]) and len(tokens) >= 3:
        tokens[2] = "{session}"
    return ".".join(tokens)
