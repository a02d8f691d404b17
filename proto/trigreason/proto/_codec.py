"""Encoding and typed decoding of bus messages (JSON)."""

from __future__ import annotations

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
    """

    def __init__(self, kind: Any) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(kind)

    def decode(self, data: bytes | str) -> T:
        return self._decoder.decode(data)


def decode_message(data: bytes | str) -> Message:
    """Decode any v1 message (tools and tests; services use a ``TypedDecoder`` per subject)."""
    decoded: Message = msgspec.json.decode(data, type=Message)
    return decoded
