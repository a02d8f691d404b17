"""Typed errors of the CPU server; each maps to one HTTP status and TGI ``error_type``."""

from __future__ import annotations

from trigreason.proto import TrigReasonError

__all__ = ["EngineError", "GenerationCancelled", "InputValidationError", "Overloaded"]


class InputValidationError(TrigReasonError):
    """The request cannot be served as asked (TGI: 422, ``error_type`` ``validation``)."""

    code = "validation"


class Overloaded(TrigReasonError):
    """The request queue is full (TGI: 429, ``error_type`` ``overloaded``); try again shortly."""

    code = "overloaded"
    retryable = True


class GenerationCancelled(TrigReasonError):
    """The caller went away or cancelled; generation stopped at the next token."""

    code = "cancelled"


class EngineError(TrigReasonError):
    """llama.cpp failed while decoding (TGI: 424, ``error_type`` ``generation``)."""

    code = "generation"
    retryable = True
