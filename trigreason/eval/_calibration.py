"""``trigreason calibrate`` without the command line: run the end points, the random baseline and the
TrigReason grid (each point in its own resumable directory), then choose a point and build the profile.

The plan is checked before anything runs; the profile is a pure function of the measured points."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import msgspec

from trigreason.proto import ConfigError, SessionParams
from trigreason.services.trigger_evaluator.policies import PolicyRegistry

from ._calibrate import GridPoint, ParamValue, Point, choose, grid, point_slug
from ._cost import EdgeCloudModel
from ._data import Problem
from ._pareto import GridEntry, ParetoSummary, pareto_summary
from ._rows import Row, read_rows
from ._run import Executor, OnProgress, complete_rows, run_eval
from ._summary import summarize

__all__ = [
    "BEATS_RANDOM_RULE",
    "Calibration",
    "CalibrationPlan",
    "CalibrationRuns",
    "Profile",
    "Progress",
    "calibration_profile",
    "no_progress",
    "plan_calibration",
    "run_calibration",
]

BEATS_RANDOM_RULE = (
    "Descriptive, not a test: beats_random means accuracy above the random baseline interpolated at the "
    "same SRM token ratio from separate runs on these problems; eval --matched-random on a test split "
    "decides with the exact McNemar test"
)
# Opens a progress display for one labelled batch of runs and hands back its callback.
Progress = Callable[[str], AbstractContextManager[OnProgress]]


def no_progress(_label: str) -> AbstractContextManager[OnProgress]:
    return contextlib.nullcontext(lambda _row, _done, _total: None)


class CalibrationPlan(msgspec.Struct, kw_only=True, frozen=True):
    """What to run: the base parameters, the TrigReason grid and the random baseline's points."""

    base: SessionParams
    points: list[Point]  # the TrigReason grid, in order
    grid_params: list[SessionParams]
    random_points: list[Point]  # offload_p and the priming they share with the grid's first value
    random_params: list[SessionParams]


def plan_calibration(
    base: SessionParams, axes: Mapping[str, Sequence[ParamValue]], offload_ps: Sequence[float]
) -> CalibrationPlan:
    """The grid of ``axes`` over ``base`` and the random baseline at each ``offload_p``, primed like the
    grid's first ``priming_steps``; every parameter set range-checked (ConfigError)."""
    points = grid(axes)
    if "priming_steps" in axes:
        priming = axes["priming_steps"][0]
    else:  # the grid is TrigReason's: its priming as the base parameters give it, else its default
        priming = PolicyRegistry.from_env().resolve(msgspec.structs.replace(base, policy="trigreason"))[1]
        priming = priming.priming_steps
    try:
        random_base = msgspec.structs.replace(base, priming_steps=priming)
        grid_params = [_checked(msgspec.structs.replace(base, **pt)) for pt in points]
        random_params = [_checked(msgspec.structs.replace(random_base, offload_p=p)) for p in offload_ps]
    except (TypeError, msgspec.ValidationError) as exc:
        raise ConfigError(str(exc)) from exc
    return CalibrationPlan(
        base=base,
        points=points,
        grid_params=grid_params,
        random_points=[{"offload_p": p, "priming_steps": priming} for p in offload_ps],
        random_params=random_params,
    )


def _checked(params: SessionParams) -> SessionParams:
    # structs.replace does not check bounds: a round trip through the decoder does.
    return msgspec.convert(msgspec.to_builtins(params), SessionParams)


class CalibrationRuns(msgspec.Struct, kw_only=True, frozen=True):
    """The measured points: the two end points, the random baseline and the TrigReason grid."""

    lrm_only: GridPoint
    srm_only: GridPoint
    random: list[GridPoint]
    grid: list[GridPoint]


async def run_calibration(
    plan: CalibrationPlan,
    problems: list[Problem],
    *,
    executor: Executor | None,
    out_dir: Path,
    progress: Progress = no_progress,
) -> CalibrationRuns:
    """Every point's runs under ``out_dir/<point>/`` (what is there already is kept). With ``executor``
    None nothing runs: every point must be complete on disk (ConfigError otherwise)."""

    async def point(label: str, policy: str, params: SessionParams, where: str, pt: Point) -> GridPoint:
        if executor is None:
            rows = _stored(out_dir / where, problems, policy)
        else:
            with progress(label) as on_progress:
                rows = await run_eval(
                    problems, [policy], samples=1, params=params, executor=executor, out_dir=out_dir / where,
                    on_progress=on_progress,
                )  # fmt: skip
        s = summarize(rows, EdgeCloudModel()).policies[policy]
        return GridPoint(params=pt, accuracy=s.accuracy, srm_token_ratio=s.srm_token_ratio)

    lrm = await point("LRM-only", "lrm-only", plan.base, "lrm-only", {"policy": "lrm-only"})
    srm = await point("SRM-only", "srm-only", plan.base, "srm-only", {"policy": "srm-only"})
    randoms: list[GridPoint] = []
    n = len(plan.random_points)
    for i, (pt, rp) in enumerate(zip(plan.random_points, plan.random_params, strict=True)):
        where = f"random-offload_p{pt['offload_p']}"
        randoms.append(await point(f"random {i + 1}/{n} {where}", "random", rp, where, pt))
    results: list[GridPoint] = []
    n = len(plan.points)
    for i, (pt, gp) in enumerate(zip(plan.points, plan.grid_params, strict=True)):
        slug = point_slug(pt)
        results.append(await point(f"{i + 1}/{n} {slug}", "trigreason", gp, slug, pt))
    return CalibrationRuns(lrm_only=lrm, srm_only=srm, random=randoms, grid=results)


def _stored(where: Path, problems: list[Problem], policy: str) -> list[Row]:
    rows = complete_rows(read_rows(where / "results.jsonl"), problems, [policy], 1)
    if len(rows) != len(problems):
        raise ConfigError(
            f"{where}: {len(rows)} of {len(problems)} runs done; run calibrate without --report-only"
        )
    return rows


class Calibration(msgspec.Struct, kw_only=True, frozen=True):
    """A profile's ``calibration`` block: how the point was chosen, and the whole front against chance."""

    dataset: str
    problems: int
    min_accuracy_vs_lrm: float
    lrm_only_accuracy: float
    srm_only_accuracy: float
    feasible: bool
    chosen: Point
    beats_random: bool
    random_accuracy_at_ratio: float
    margin_vs_random: float
    grid: list[GridEntry]
    front: list[GridPoint]
    random: list[GridPoint]
    end_points: dict[str, GridPoint]
    srm_model: str = ""
    lrm_model: str = ""
    seconds: float = 0.0
    # beats_random and margin_vs_random (here and per grid point) describe; they do not test.
    beats_random_rule: str = BEATS_RANDOM_RULE

    def chosen_entry(self) -> GridEntry:
        return next(g for g in self.grid if g.params == self.chosen)


class Profile(msgspec.Struct, kw_only=True, frozen=True):
    """The profile ``calibrate`` writes: ``params`` are what ``--profile`` applies (no policy, no seed)."""

    name: str
    params: dict[str, object]
    calibration: Calibration


def calibration_profile(
    name: str,
    plan: CalibrationPlan,
    runs: CalibrationRuns,
    *,
    dataset: str,
    problems: int,
    min_accuracy: float,
    srm_model: str = "",
    lrm_model: str = "",
    seconds: float = 0.0,
) -> tuple[Profile, bool]:
    """The profile of the chosen point (see ``choose``) and whether it met the accuracy floor."""
    best, feasible = choose(runs.grid, lrm_accuracy=runs.lrm_only.accuracy, min_fraction=min_accuracy)
    versus: ParetoSummary = pareto_summary(
        runs.grid, runs.random, lrm_only=runs.lrm_only, srm_only=runs.srm_only
    )
    entry = next(g for g, r in zip(versus.grid, runs.grid, strict=True) if r is best)
    params = msgspec.to_builtins(msgspec.structs.replace(plan.base, **best.params))
    params.pop("policy", None)
    params.pop("seed", None)
    calibration = Calibration(
        dataset=dataset, problems=problems, min_accuracy_vs_lrm=min_accuracy,
        lrm_only_accuracy=runs.lrm_only.accuracy, srm_only_accuracy=runs.srm_only.accuracy, feasible=feasible,
        chosen=best.params, beats_random=entry.beats_random,
        random_accuracy_at_ratio=entry.random_accuracy_at_ratio, margin_vs_random=entry.margin_vs_random,
        grid=versus.grid, front=versus.front, random=versus.random, end_points=versus.end_points,
        srm_model=srm_model, lrm_model=lrm_model, seconds=seconds,
    )  # fmt: skip
    return Profile(name=name, params=params, calibration=calibration), feasible
