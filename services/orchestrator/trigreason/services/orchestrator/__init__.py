"""The session-orchestrator: an event-driven state machine.

Its logic is the pure ``decide(state, event) -> (state, outputs)`` with one transition table
(``transitions``), prompts, answer extraction and accounting: no I/O, no clock, no random ids. The service
around it (``Orchestrator``) is a thin bus adapter: load the snapshot, decide, compare-and-set the snapshot
with its outbox, publish. ``python -m trigreason.services.orchestrator`` runs the service.
"""

from ._accounting import session_stats
from ._answers import extract_boxed
from ._handlers import command_id
from ._prompts import STEP_DELIMITER, render_generation_prompt, render_judge_prompt
from ._serve import main, serve
from ._service import Orchestrator, event_key, output_msg_id
from .transitions import (
    TRANSITIONS,
    OrchestratorEvent,
    Output,
    Transition,
    decide,
    initial_state,
    render_diagram,
)

__all__ = [
    "STEP_DELIMITER",
    "TRANSITIONS",
    "Orchestrator",
    "OrchestratorEvent",
    "Output",
    "Transition",
    "command_id",
    "decide",
    "event_key",
    "extract_boxed",
    "initial_state",
    "main",
    "output_msg_id",
    "render_diagram",
    "render_generation_prompt",
    "render_judge_prompt",
    "serve",
    "session_stats",
]
