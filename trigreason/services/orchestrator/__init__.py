"""The session-orchestrator service."""

from ._service import Orchestrator, event_key, output_msg_id

__all__ = ["Orchestrator", "event_key", "output_msg_id"]
