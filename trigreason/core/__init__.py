"""The pure core: trigger policies, the orchestrator state machine, prompts, answers, accounting.

Nothing here does I/O, reads a clock or draws a random number: every input arrives in an event.
"""

from ._accounting import session_stats
from ._answers import extract_boxed, has_final_answer
from ._errors import BackendError, ConfigError, IllegalEvent, StaleEvent, TrigReasonError
from ._evaluator import evaluate
from ._handlers import answered_command, command_id, judge_command_id
from ._prompts import STEP_DELIMITER, render_generation_prompt, render_judge_prompt
from ._results import judge_scored, step_failed, step_generated
from ._triggers import TriggerDecision, confident_share, decide_trigreason, hesitates, judge_score
from .transitions import TRANSITIONS, OrchestratorEvent, Output, decide, initial_state, render_diagram

__all__ = [
    "STEP_DELIMITER",
    "TRANSITIONS",
    "BackendError",
    "ConfigError",
    "IllegalEvent",
    "OrchestratorEvent",
    "Output",
    "StaleEvent",
    "TrigReasonError",
    "TriggerDecision",
    "answered_command",
    "command_id",
    "confident_share",
    "decide",
    "decide_trigreason",
    "evaluate",
    "extract_boxed",
    "has_final_answer",
    "hesitates",
    "initial_state",
    "judge_command_id",
    "judge_score",
    "judge_scored",
    "render_diagram",
    "render_generation_prompt",
    "render_judge_prompt",
    "session_stats",
    "step_failed",
    "step_generated",
]
