"""The trigger-evaluator service."""

from ._service import TriggerEvaluator

__all__ = ["TriggerEvaluator"]
