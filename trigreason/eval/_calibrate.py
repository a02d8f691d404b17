"""Calibration: the grid point with the most SRM tokens whose accuracy stays within a chosen fraction of
LRM-only. The choice is a pure function; ``run_calibration`` runs the grid."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import msgspec

__all__ = ["GridPoint", "ParamValue", "Point", "choose", "grid", "point_slug"]

# A grid point names parameters by name (rho, priming_steps, offload_p, or the policy of an end point):
# the names are data, so new axes need no new code here.
ParamValue = int | float | str
Point = dict[str, ParamValue]


class GridPoint(msgspec.Struct, kw_only=True, frozen=True):
    """A measured point: its parameters, and the accuracy and SRM token ratio its runs reached."""

    params: Point
    accuracy: float
    srm_token_ratio: float


def point_slug(point: Mapping[str, ParamValue]) -> str:
    """A point's directory name: ``rho0.9-priming_steps2``."""
    return "-".join(f"{key}{value}" for key, value in point.items())


def grid(axes: Mapping[str, Sequence[ParamValue]]) -> list[Point]:
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
