"""The trigger-evaluator: the trigger policies as a subscriber to the step stream.

``evaluate`` is pure and stateless: an SRM step (with the trigger context the orchestrator attached) in, a
``Verdict`` out, or under SpecReason first a ``JudgeStep`` for the LRM. The policies themselves
(``decide_trigreason``, ``confident_share``, ``hesitates``, ``judge_score``) are what the in-process runner
and ``trigreason triggers replay`` use too. ``TriggerEvaluator`` is the thin bus adapter.
"""

from ._evaluator import evaluate
from ._serve import main, serve
from ._service import TriggerEvaluator
from ._triggers import (
    TriggerDecision,
    confident_share,
    decide_trigreason,
    hesitates,
    judge_score,
    random_offload,
)

__all__ = [
    "TriggerDecision",
    "TriggerEvaluator",
    "confident_share",
    "decide_trigreason",
    "evaluate",
    "hesitates",
    "judge_score",
    "main",
    "random_offload",
    "serve",
]
