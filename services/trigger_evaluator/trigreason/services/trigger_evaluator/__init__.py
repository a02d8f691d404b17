"""The trigger-evaluator: the trigger policies as a subscriber to the step stream.

``evaluate`` is pure and stateless: an SRM step (with the trigger context the orchestrator attached) in, a
``Verdict`` out, or for a policy that needs a judge first a ``JudgeStep`` for the LRM. The policies
themselves and their registry (``policies``) are what the orchestrator, the gateway, the in-process
runner, eval and ``trigreason triggers replay`` read too. ``TriggerEvaluator`` is the thin bus adapter.
"""

from ._evaluator import evaluate
from ._serve import main, serve
from ._service import TriggerEvaluator
from .policies import (
    PolicyRegistry,
    TriggerDecision,
    confident_share,
    decide_trigreason,
    hesitates,
    judge_score,
    random_offload,
)

__all__ = [
    "PolicyRegistry",
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
