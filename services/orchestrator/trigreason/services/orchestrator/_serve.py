"""Run the session-orchestrator as a service process (its image's entry point and ``trigreason serve``)."""

from trigreason.services.runtime import consumer_service

from ._service import Orchestrator

__all__ = ["serve"]

serve = consumer_service("orchestrator", Orchestrator)
