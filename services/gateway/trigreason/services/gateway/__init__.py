"""The HTTP gateway: sessions in, their events out (Server-Sent Events, OpenAI-compatible chat), health,
readiness, metrics and the OpenAPI document. ``python -m trigreason.services.gateway`` runs it."""

from ._app import GatewaySettings, make_app, profile_file
from ._serve import serve

__all__ = ["GatewaySettings", "make_app", "profile_file", "serve"]
