"""The ``trigreason`` command line."""

from ._app import app, main
from ._params import session_params
from ._solve import graded

__all__ = ["app", "graded", "main", "session_params"]
