"""Run the trigger-evaluator as a service process (its image's entry point and ``trigreason serve``)."""

from trigreason.services.runtime import consumer_service

from ._service import TriggerEvaluator

__all__ = ["serve"]

serve = consumer_service("trigger-evaluator", TriggerEvaluator)
