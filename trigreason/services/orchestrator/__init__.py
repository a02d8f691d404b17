"""The session-orchestrator service."""

from ._service import Orchestrator, output_msg_id

__all__ = ["Orchestrator", "output_msg_id"]
