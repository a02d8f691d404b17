"""The HTTP gateway service."""

from ._app import GatewaySettings, make_app

__all__ = ["GatewaySettings", "make_app"]
