"""Pareto fronts and the random baseline in calibration: which grid points are worth having, and does a
point beat a router that hands the LRM steps at random?

Points are (SRM token ratio, accuracy), both to maximise. The random baseline is known at a few measured
points (the ``random`` policy at several ``offload_p``, each point at its *measured* SRM token ratio) and at
the two end points, LRM-only and SRM-only; between them it is interpolated piecewise-linearly. All pure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from ._calibrate import GridPoint, Point

__all__ = [
    "GridEntry",
    "ParetoSummary",
    "RandomVerdict",
    "beats_random",
    "pareto_front",
    "pareto_summary",
    "random_accuracy_at",
]

_EPS = 1e-12  # float noise: a margin below this is no margin


@dataclass(frozen=True, kw_only=True, slots=True)
class RandomVerdict:
    # Accuracy strictly above the random baseline's at the same SRM token ratio: a description of these
    # problems, not a test (the baseline is interpolated between separate runs, so nothing is paired).
    beats_random: bool
    random_accuracy_at_ratio: float
    margin: float  # accuracy minus random_accuracy_at_ratio


def _dominates(a: GridPoint, b: GridPoint) -> bool:
    return (
        a.accuracy >= b.accuracy
        and a.srm_token_ratio >= b.srm_token_ratio
        and (a.accuracy > b.accuracy or a.srm_token_ratio > b.srm_token_ratio)
    )


def pareto_front(points: Sequence[GridPoint]) -> list[GridPoint]:
    """The points no other point dominates (at least as good on both, better on one), by SRM token ratio
    (then accuracy). Equal points are all on the front when any is."""
    front = [p for p in points if not any(_dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (p.srm_token_ratio, -p.accuracy))


def random_accuracy_at(
    ratio: float, random_points: Sequence[GridPoint], *, lrm_only: GridPoint, srm_only: GridPoint
) -> float:
    """The random baseline's accuracy at ``ratio``: piecewise-linear through the random points and the end
    points (LRM-only, usually at ratio 0; SRM-only at 1), sorted by measured ratio. Points at the same
    ratio count as their mean; outside the measured range the nearest end's accuracy holds."""
    by_ratio: dict[float, list[float]] = defaultdict(list)
    for p in (lrm_only, *random_points, srm_only):
        by_ratio[p.srm_token_ratio].append(p.accuracy)
    xs = sorted(by_ratio)
    ys = [sum(by_ratio[x]) / len(by_ratio[x]) for x in xs]
    if ratio <= xs[0]:
        return ys[0]
    if ratio >= xs[-1]:
        return ys[-1]
    i = next(i for i in range(1, len(xs)) if ratio <= xs[i])  # xs[i - 1] < ratio <= xs[i]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (ratio - xs[i - 1]) / (xs[i] - xs[i - 1])


def beats_random(
    point: GridPoint, random_points: Sequence[GridPoint], *, lrm_only: GridPoint, srm_only: GridPoint
) -> RandomVerdict:
    """Whether ``point`` is strictly more accurate than the random baseline at its SRM token ratio."""
    at = random_accuracy_at(point.srm_token_ratio, random_points, lrm_only=lrm_only, srm_only=srm_only)
    margin = point.accuracy - at
    return RandomVerdict(beats_random=margin > _EPS, random_accuracy_at_ratio=at, margin=margin)


class GridEntry(msgspec.Struct, kw_only=True, frozen=True):
    """A TrigReason grid point in the calibration block, with its place against the front and chance."""

    params: Point
    accuracy: float
    srm_token_ratio: float
    on_front: bool
    random_accuracy_at_ratio: float
    beats_random: bool
    margin_vs_random: float


class ParetoSummary(msgspec.Struct, kw_only=True, frozen=True):
    """A calibration's comparison with chance: every grid point, the front, the random points (by ratio)
    and the end points (``lrm-only``, ``srm-only``)."""

    grid: list[GridEntry]
    front: list[GridPoint]
    random: list[GridPoint]
    end_points: dict[str, GridPoint]


def pareto_summary(
    points: Sequence[GridPoint],
    random_points: Sequence[GridPoint],
    *,
    lrm_only: GridPoint,
    srm_only: GridPoint,
) -> ParetoSummary:
    """Every TrigReason grid point (``on_front``, the random accuracy at its ratio, ``beats_random``,
    ``margin_vs_random``), the front, the random points and the end points."""
    front = pareto_front(points)
    grid = []
    for p in points:
        v = beats_random(p, random_points, lrm_only=lrm_only, srm_only=srm_only)
        grid.append(
            GridEntry(
                params=p.params,
                accuracy=p.accuracy,
                srm_token_ratio=p.srm_token_ratio,
                on_front=any(p is q for q in front),
                random_accuracy_at_ratio=v.random_accuracy_at_ratio,
                beats_random=v.beats_random,
                margin_vs_random=v.margin,
            )
        )
    return ParetoSummary(
        grid=grid,
        front=front,
        random=sorted(random_points, key=lambda p: p.srm_token_ratio),
        end_points={"lrm-only": lrm_only, "srm-only": srm_only},
    )
