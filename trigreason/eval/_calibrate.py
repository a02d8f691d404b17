"""Calibration: the grid point with the most SRM tokens whose accuracy stays within a chosen fraction of
LRM-only. The choice is a pure function; ``trigreason calibrate`` runs the grid and writes the profile."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["GridPoint", "choose", "grid"]


@dataclass(frozen=True, kw_only=True, slots=True)
class GridPoint:
    params: dict[str, Any]
    accuracy: float
    srm_token_ratio: float


def grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in a stable order."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(axes[n] for n in names))]


def choose(
    points: Sequence[GridPoint], *, lrm_accuracy: float, min_fraction: float
) -> tuple[GridPoint, bool]:
    """The point maximising SRM token ratio subject to accuracy >= ``min_fraction`` x LRM-only accuracy
    (ties: the more accurate). ``(point, True)``; when no point qualifies, the most accurate one (ties:
    more SRM tokens) and ``False``."""
    if not points:
        raise ValueError("no grid points")
    bar = min_fraction * lrm_accuracy - 1e-12
    feasible = [p for p in points if p.accuracy >= bar]
    if feasible:
        return max(feasible, key=lambda p: (p.srm_token_ratio, p.accuracy)), True
    return max(points, key=lambda p: (p.accuracy, p.srm_token_ratio)), False
