"""Encoding and typed decoding of bus messages (JSON)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from ._v1 import Message, SessionSnapshot

__all__ = ["DecodeError", "TypedDecoder", "decode_message", "encode"]

T = TypeVar("T")

DecodeError = msgspec.DecodeError


def encode(message: Message | SessionSnapshot | msgspec.Struct) -> bytes:
    return msgspec.json.encode(message)


class TypedDecoder(Generic[T]):
    """One decoder per subject: it accepts only the message types that may arrive there.

    Anything else (garbage bytes, a known message on the wrong subject, a field out of range) raises
    ``DecodeError`` with msgspec's precise reason, which the services put on the dead-letter stream.

    ``check`` finishes what the types cannot say (a policy's own parameters, which the registry knows):
    it returns the message, possibly normalised, or raises ``msgspec.ValidationError``.
    """

    def __init__(self, kind: Any, *, check: Callable[[T], T] | None = None) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(kind)
        self._check = check

    def decode(self, data: bytes | str) -> T:
        message = self._decoder.decode(data)
        return message if self._check is None else self._check(message)


def decode_message(data: bytes | str) -> Message:
    """Decode any v1 message (tools and tests; services use a ``TypedDecoder`` per subject)."""
    decoded: Message = msgspec.json.decode(data, type=Message)
    return decoded
