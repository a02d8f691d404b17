"""The orchestrator's state machine: one table says which event each phase accepts and where it leads.

``decide(state, event) -> (state, outputs)`` is the whole orchestrator logic, pure and deterministic.
Run ``python -m trigreason.core`` to print the state diagram (docs/state-machine.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from trigreason.proto import Phase, SessionRequested, SessionSnapshot, StepFailed, StepGenerated, Verdict

from ._errors import IllegalEvent, StaleEvent
from ._handlers import Output, on_lrm_step, on_session_requested, on_step_failed, on_verdict

__all__ = [
    "TRANSITIONS",
    "OrchestratorEvent",
    "Output",
    "Transition",
    "decide",
    "initial_state",
    "render_diagram",
]

OrchestratorEvent = SessionRequested | StepGenerated | Verdict | StepFailed


class Transition(NamedTuple):
    handler: Callable[[SessionSnapshot, Any], tuple[SessionSnapshot, tuple[Output, ...]]]
    targets: frozenset[Phase]
    label: str


_RUNNING: Final[frozenset[Phase]] = frozenset({"awaiting_lrm", "awaiting_verdict"})
_AFTER_STEP: Final[frozenset[Phase]] = _RUNNING | {"finished"}

TRANSITIONS: Final[dict[tuple[Phase, type], Transition]] = {
    ("new", SessionRequested): Transition(on_session_requested, _RUNNING, "start: priming or first SRM step"),
    ("awaiting_lrm", StepGenerated): Transition(on_lrm_step, _AFTER_STEP, "commit LRM step"),
    ("awaiting_verdict", Verdict): Transition(on_verdict, _AFTER_STEP, "accept SRM step, or replace"),
    ("awaiting_lrm", StepFailed): Transition(on_step_failed, frozenset({"failed"}), "backend gave up"),
    ("awaiting_verdict", StepFailed): Transition(on_step_failed, frozenset({"failed"}), "backend gave up"),
}


def initial_state(session_id: str) -> SessionSnapshot:
    return SessionSnapshot(session_id=session_id)


def decide(state: SessionSnapshot, event: OrchestratorEvent) -> tuple[SessionSnapshot, tuple[Output, ...]]:
    """Apply one event. Raises ``IllegalEvent`` (``StaleEvent`` for duplicates) and leaves ``state`` as is."""
    if event.session_id != state.session_id:
        raise IllegalEvent(f"event for session {event.session_id} applied to {state.session_id}")
    if isinstance(event, StepGenerated) and event.role != "lrm":
        raise IllegalEvent("SRM steps reach the orchestrator only as a Verdict")
    cid = _answers_command(event)
    if state.phase != "new" and (cid is None or cid != state.awaiting):
        # A redelivered or superseded event: everything it could cause has happened already.
        raise StaleEvent(f"{type(event).__name__} ({cid}) is stale: session awaits {state.awaiting!r}")
    transition = TRANSITIONS.get((state.phase, type(event)))
    if transition is None:
        raise IllegalEvent(f"{type(event).__name__} is not allowed in phase {state.phase!r}")
    new_state, outputs = transition.handler(state, event)
    if new_state.phase not in transition.targets:  # pragma: no cover - guards the table itself
        raise AssertionError(
            f"{transition.label}: reached {new_state.phase}, allowed {set(transition.targets)}"
        )
    return new_state, outputs


def _answers_command(event: OrchestratorEvent) -> str | None:
    """The command an event answers (``None`` for a session request)."""
    if isinstance(event, Verdict):
        return event.candidate.command_id
    if isinstance(event, StepGenerated | StepFailed):
        return event.command_id
    return None


def render_diagram() -> str:
    """A Markdown page with a Mermaid state diagram generated from ``TRANSITIONS``."""
    lines = [
        "# Orchestrator state machine",
        "",
        "Generated from `trigreason/core/transitions.py` by `make schemas` (`python -m trigreason.core`);",
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
