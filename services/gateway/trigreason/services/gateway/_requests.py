"""The JSON bodies the gateway decodes (besides the chat completion's ``ChatBody`` in ``_chat``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from trigreason.proto import PolicyName

from ._chat import ChatMessage, Conversation, conversation, stop_sequences
from ._http import HttpError
from ._patterns import MAX_QUESTION_CHARS

__all__ = ["SessionBody"]


class SessionBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """question, or in its place messages: a conversation whose last user turn is the question."""

    question: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_QUESTION_CHARS)] | UnsetType = UNSET
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)] | UnsetType = UNSET
    stop: str | list[str] | None = None
    policy: PolicyName | None = None
    params: dict[str, Any] = {}

    def conversation(self) -> Conversation:
        if isinstance(self.question, str):
            if not isinstance(self.messages, UnsetType):
                raise HttpError(
                    422, "invalid_request", "give question or messages (a conversation), not both"
                )
            return Conversation(question=self.question, stop=stop_sequences(self.stop))
        if isinstance(self.messages, UnsetType):
            raise HttpError(422, "invalid_request", "give question or messages (a conversation)")
        return conversation(self.messages, self.stop)
