"""The ``trigreason`` command line."""

from ._app import app, main
from ._params import session_params

__all__ = ["app", "main", "session_params"]
