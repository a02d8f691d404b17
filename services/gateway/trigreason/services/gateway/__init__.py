"""The HTTP gateway: sessions in, their events out (Server-Sent Events, OpenAI-compatible chat), health,
readiness, metrics and the OpenAPI document. ``python -m trigreason.services.gateway`` runs it."""

from ._app import OPEN_STREAMS, Gateway, idempotent_session_id, make_app
from ._browser import trace_id_of
from ._chat import ChatBody, ChatRequest, chat_request
from ._http import HttpError
from ._limits import check_limits
from ._openapi import ROUTES
from ._projection import SessionProjection, session_view
from ._responses import ChatChunk, Error, SessionList, Trace
from ._serve import main, serve
from ._settings import GatewaySettings, profile_file

__all__ = [
    "OPEN_STREAMS",
    "ROUTES",
    "ChatBody",
    "ChatChunk",
    "ChatRequest",
    "Error",
    "Gateway",
    "GatewaySettings",
    "HttpError",
    "SessionList",
    "SessionProjection",
    "Trace",
    "chat_request",
    "check_limits",
    "idempotent_session_id",
    "main",
    "make_app",
    "profile_file",
    "serve",
    "session_view",
    "trace_id_of",
]
