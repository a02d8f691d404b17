"""The policies that ship with the project, in the order listings show them."""

from __future__ import annotations

from typing import Any

from . import _likelihood, _random, _specreason, _trigreason
from ._endpoints import LRM_ONLY, SRM_ONLY
from ._registry import Policy

__all__ = ["BUILTIN"]

BUILTIN: tuple[Policy[Any], ...] = (
    _trigreason.POLICY,
    _specreason.POLICY,
    LRM_ONLY,
    SRM_ONLY,
    _random.POLICY,
    _likelihood.POLICY,
)
