"""One typed error base for the whole project; ``retryable`` tells a caller whether to try again."""

from __future__ import annotations

__all__ = ["BackendError", "ConfigError", "IllegalEvent", "StaleEvent", "TrigReasonError"]


class TrigReasonError(Exception):
    """Base of every error this project raises on purpose."""

    #: A stable, machine-readable code (also used in HTTP error bodies and ``SessionFailed.code``).
    code: str = "internal"
    #: Whether the same operation may succeed if tried again.
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


class IllegalEvent(TrigReasonError):
    """An event the session's current state does not allow; the state is left untouched."""

    code = "illegal_event"


class StaleEvent(IllegalEvent):
    """A duplicate or late event (redelivery, a superseded attempt): safe to acknowledge and drop."""

    code = "stale_event"


class ConfigError(TrigReasonError):
    code = "bad_config"


class BackendError(TrigReasonError):
    """An inference backend failed; connection errors and 5xx are retryable, 4xx are not."""

    code = "backend_error"
