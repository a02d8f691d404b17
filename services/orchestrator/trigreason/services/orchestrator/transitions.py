"""The orchestrator's state machine: one table says which event each phase accepts and where it leads.

``decide(state, event) -> (state, outputs)`` is the whole orchestrator logic, pure and deterministic.
``make schemas`` writes the state diagram (docs/state-machine.md) from ``TRANSITIONS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from trigreason.proto import (
    CloudUnavailable,
    DeadlineReached,
    IllegalEvent,
    MessageDeadLettered,
    Phase,
    SessionRequested,
    SessionSnapshot,
    StaleEvent,
    StepFailed,
    StepGenerated,
    Verdict,
    answered_command,
)
from trigreason.services.trigger_evaluator.policies import PolicyRegistry

from ._handlers import (
    Output,
    on_cloud_unavailable,
    on_dead_lettered,
    on_deadline,
    on_lrm_step,
    on_session_requested,
    on_step_failed,
    on_verdict,
)

__all__ = [
    "TRANSITIONS",
    "OrchestratorEvent",
    "Output",
    "Transition",
    "decide",
    "initial_state",
    "render_diagram",
]

OrchestratorEvent = (
    SessionRequested
    | StepGenerated
    | Verdict
    | StepFailed
    | DeadlineReached
    | MessageDeadLettered
    | CloudUnavailable
)


class Transition(NamedTuple):
    handler: Callable[[SessionSnapshot, Any, PolicyRegistry], tuple[SessionSnapshot, tuple[Output, ...]]]
    targets: frozenset[Phase]
    label: str


_RUNNING: Final[frozenset[Phase]] = frozenset({"awaiting_lrm", "awaiting_verdict"})
_AFTER_STEP: Final[frozenset[Phase]] = _RUNNING | {"finished"}
_FAILED: Final[frozenset[Phase]] = frozenset({"failed"})

TRANSITIONS: Final[dict[tuple[Phase, type], Transition]] = {
    ("new", SessionRequested): Transition(
        on_session_requested, _RUNNING | {"failed"}, "start: priming, first SRM step, or an unknown policy"
    ),
    ("awaiting_lrm", StepGenerated): Transition(on_lrm_step, _AFTER_STEP, "commit LRM step"),
    ("awaiting_verdict", Verdict): Transition(on_verdict, _AFTER_STEP, "accept SRM step, or replace"),
    ("awaiting_lrm", StepFailed): Transition(on_step_failed, _FAILED, "backend gave up"),
    ("awaiting_lrm", CloudUnavailable): Transition(
        on_cloud_unavailable, frozenset({"awaiting_verdict"}), "cloud unreachable: the SRM writes the step"
    ),
    ("awaiting_verdict", StepFailed): Transition(on_step_failed, _FAILED, "backend or judge gave up"),
    ("new", DeadlineReached): Transition(on_deadline, _FAILED, "deadline passed"),
    ("awaiting_lrm", DeadlineReached): Transition(on_deadline, _FAILED, "deadline passed"),
    ("awaiting_verdict", DeadlineReached): Transition(on_deadline, _FAILED, "deadline passed"),
    ("new", MessageDeadLettered): Transition(on_dead_lettered, _FAILED, "request dead-lettered"),
    ("awaiting_lrm", MessageDeadLettered): Transition(on_dead_lettered, _FAILED, "message dead-lettered"),
    ("awaiting_verdict", MessageDeadLettered): Transition(on_dead_lettered, _FAILED, "message dead-lettered"),
}
_TERMINAL: Final[frozenset[Phase]] = frozenset({"finished", "failed"})


def initial_state(session_id: str) -> SessionSnapshot:
    return SessionSnapshot(session_id=session_id)


def decide(
    state: SessionSnapshot, event: OrchestratorEvent, policies: PolicyRegistry | None = None
) -> tuple[SessionSnapshot, tuple[Output, ...]]:
    """Apply one event. Raises ``IllegalEvent`` (``StaleEvent`` for duplicates) and leaves ``state`` as is.

    ``policies``: the registry the session's policy is looked up in (the built-in policies when ``None``).
    """
    if event.session_id != state.session_id:
        raise IllegalEvent(f"event for session {event.session_id} applied to {state.session_id}")
    if isinstance(event, StepGenerated) and event.role != "lrm":
        raise IllegalEvent("SRM steps reach the orchestrator only as a Verdict")
    if _is_stale(state, event):
        # A redelivered or superseded event: everything it could cause has happened already.
        raise StaleEvent(
            f"{type(event).__name__} ({_answers_command(event)}) is stale: session is {state.phase}, "
            f"awaits {state.awaiting!r}"
        )
    transition = TRANSITIONS.get((state.phase, type(event)))
    if transition is None:
        raise IllegalEvent(f"{type(event).__name__} is not allowed in phase {state.phase!r}")
    new_state, outputs = transition.handler(state, event, policies or PolicyRegistry.builtin())
    if new_state.phase not in transition.targets:  # pragma: no cover - guards the table itself
        raise AssertionError(
            f"{transition.label}: reached {new_state.phase}, allowed {set(transition.targets)}"
        )
    return new_state, outputs


def _is_stale(state: SessionSnapshot, event: OrchestratorEvent) -> bool:
    if state.phase in _TERMINAL:
        return True  # a session ends once; nothing after its terminal event changes it
    if isinstance(event, DeadlineReached):
        return False
    if isinstance(event, MessageDeadLettered):
        if state.phase == "new":
            # No snapshot: only the session's own request, dead, means a session that will never start.
            return not event.origin_subject.endswith(".requested")
        # A dead message stops the session unless it belonged to an attempt the session has left behind.
        cid = event.command_id
        return cid is not None and answered_command(cid) != state.awaiting
    if state.phase == "new":
        # Only a request starts a session; an answer to a command of a session with no snapshot (it
        # expired) has nothing to continue.
        return not isinstance(event, SessionRequested)
    cid = _answers_command(event)
    return cid is None or cid != state.awaiting


def _answers_command(event: OrchestratorEvent) -> str | None:
    """The orchestrator command an event answers (``None`` for a request, a timer or a dead letter).

    A failed SpecReason judge call answers the SRM step it judged: the session waits for that step.
    """
    if isinstance(event, Verdict):
        return event.candidate.command_id
    if isinstance(event, StepGenerated | StepFailed):
        return answered_command(event.command_id)
    if isinstance(event, CloudUnavailable):
        return event.command_id
    return None


def render_diagram() -> str:
    """A Markdown page with a Mermaid state diagram generated from ``TRANSITIONS``."""
    lines = [
        "# Orchestrator state machine",
        "",
        "Generated from the orchestrator's `transitions.py` (services/orchestrator) by `make schemas`;",
        "a test fails when it drifts.",
        "",
        "```mermaid",
        "stateDiagram-v2",
        "    [*] --> new",
    ]
    for (phase, event), transition in TRANSITIONS.items():
        for target in sorted(transition.targets):
            lines.append(f"    {phase} --> {target}: {event.__name__} ({transition.label})")
    lines += ["    finished --> [*]", "    failed --> [*]", "```", ""]
    return "\n".join(lines)
