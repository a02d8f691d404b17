"""``trigreason calibrate`` without the command line: run the end points, the random baseline and the
grid of one policy's parameters (each point in its own resumable directory), then choose a point and build
the profile. The grid's axes are any numeric parameters of the policy, checked against the registry.

The plan is checked before anything runs; the profile is a pure function of the measured points."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import msgspec

from trigreason.proto import ConfigError, SessionParams
from trigreason.services.trigger_evaluator.policies import PolicyError, PolicyRegistry, did_you_mean

from ._calibrate import GridPoint, ParamValue, Point, choose, grid, point_slug
from ._cost import EdgeCloudModel
from ._data import Problem
from ._pareto import GridEntry, ParetoSummary, pareto_summary
from ._rows import Row, read_rows
from ._run import Executor, OnProgress, complete_rows, run_eval
from ._summary import summarize

__all__ = [
    "BEATS_RANDOM_RULE",
    "Beside",
    "Calibration",
    "CalibrationPlan",
    "CalibrationRuns",
    "Profile",
    "Progress",
    "beside_calibration",
    "calibration_profile",
    "check_beside",
    "grid_axes",
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


def grid_axes(
    registry: PolicyRegistry, policy: str, axes: Mapping[str, Sequence[float]]
) -> dict[str, list[ParamValue]]:
    """``axes`` checked against ``policy``'s registered parameters: each name one of its numeric
    parameters (else a "did you mean"), each value within the parameter's bounds (else an error naming
    the bound), integers for an integer parameter. Raises ``ConfigError``."""
    try:
        chosen = registry.get(policy)
    except PolicyError as exc:
        raise ConfigError(exc.message) from None
    numeric = {p.name: p.schema for p in chosen.param_info() if p.schema.get("type") in ("integer", "number")}
    out: dict[str, list[ParamValue]] = {}
    for name, values in axes.items():
        if name not in numeric:
            others = set(chosen.params.__struct_fields__) - set(numeric)
            why = "is not numeric" if name in others else "is not one of its parameters"
            raise ConfigError(
                f"policy {policy!r}: grid axis {name!r} {why}{did_you_mean(name, numeric)}; its numeric "
                f"parameters: {', '.join(numeric) or 'none'}"
            )
        if not values:
            raise ConfigError(f"grid axis {name!r} has no values")
        out[name] = [_in_bounds(policy, name, numeric[name], v) for v in values]
    return out


def _in_bounds(policy: str, name: str, schema: Mapping[str, Any], value: float) -> ParamValue:
    where = f"policy {policy!r}: {name}={value:g}"
    if schema.get("type") == "integer":
        if not float(value).is_integer():
            raise ConfigError(f"{where} is not an integer")
        value = int(value)
    low, high = schema.get("minimum"), schema.get("maximum")
    xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if low is not None and value < low:
        raise ConfigError(f"{where} is below its minimum {low}")
    if xlow is not None and value <= xlow:
        raise ConfigError(f"{where} is not above its exclusive minimum {xlow}")
    if high is not None and value > high:
        raise ConfigError(f"{where} is above its maximum {high}")
    if xhigh is not None and value >= xhigh:
        raise ConfigError(f"{where} is not below its exclusive maximum {xhigh}")
    return value


class CalibrationPlan(msgspec.Struct, kw_only=True, frozen=True):
    """What to run: the base parameters, the policy's grid and the random baseline's points."""

    base: SessionParams
    points: list[Point]  # the policy's grid, in order
    grid_params: list[SessionParams]
    random_points: list[Point]  # offload_p and the priming they share with the grid's first value
    random_params: list[SessionParams]
    policy: str = "trigreason"  # the policy calibrated

    def point_dir(self, point: Mapping[str, ParamValue]) -> str:
        """A grid point's run directory: TrigReason's unprefixed (``rho0.9-priming_steps2``, as before),
        another policy's prefixed with its name (two policies may share a parameter name)."""
        slug = point_slug(point)
        return slug if self.policy == "trigreason" else f"{self.policy}-{slug}"


def plan_calibration(
    base: SessionParams,
    axes: Mapping[str, Sequence[ParamValue]],
    offload_ps: Sequence[float],
    *,
    policy: str = "trigreason",
    registry: PolicyRegistry | None = None,
) -> CalibrationPlan:
    """The grid of ``axes`` (parameters of ``policy``) over ``base`` and the random baseline at each
    ``offload_p``, primed like the grid's first ``priming_steps`` (else as the policy primes, else as
    the random baseline does); every parameter set checked by the registry (ConfigError)."""
    registry = registry or PolicyRegistry.from_env()
    axes = grid_axes(registry, policy, {k: [float(v) for v in vs] for k, vs in axes.items()})
    if not axes:
        raise ConfigError(f"no grid axes for policy {policy!r}: give --grid NAME=V1,V2,...")
    points = grid(axes)
    try:
        if "priming_steps" in axes:
            priming = axes["priming_steps"][0]
        else:
            primer = policy if registry.get(policy).primes else "random"
            priming = registry.resolve(msgspec.structs.replace(base, policy=primer))[1].priming_steps
        grid_params = [_with(registry, base, policy, pt) for pt in points]
        random_params = [
            _with(registry, base, "random", {"priming_steps": priming, "offload_p": p}) for p in offload_ps
        ]
    except PolicyError as exc:
        raise ConfigError(exc.message) from None
    return CalibrationPlan(
        base=base,
        points=points,
        grid_params=grid_params,
        random_points=[{"offload_p": p, "priming_steps": priming} for p in offload_ps],
        random_params=random_params,
        policy=policy,
    )


def _with(registry: PolicyRegistry, base: SessionParams, policy: str, point: Point) -> SessionParams:
    # The point's values go into policy_params; a v1 flat knob of the same name would win there, so it
    # is cleared. Checked by the registry (bounds) before anything runs.
    flat = {k: msgspec.UNSET for k in point if k in SessionParams.__struct_fields__ and k != "policy"}
    params = msgspec.structs.replace(
        base, policy=policy, policy_params={**base.policy_params, **point}, **flat
    )
    registry.resolve(params)
    return params


class CalibrationRuns(msgspec.Struct, kw_only=True, frozen=True):
    """The measured points: the two end points, the random baseline and the policy's grid."""

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
        results.append(await point(f"{i + 1}/{n} {slug}", plan.policy, gp, plan.point_dir(pt), pt))
    return CalibrationRuns(lrm_only=lrm, srm_only=srm, random=randoms, grid=results)


def _stored(where: Path, problems: list[Problem], policy: str) -> list[Row]:
    rows = complete_rows(read_rows(where / "results.jsonl"), problems, [policy], 1)
    if len(rows) != len(problems):
        raise ConfigError(
            f"{where}: {len(rows)} of {len(problems)} runs done; run calibrate without --report-only"
        )
    return rows


class Beside(msgspec.Struct, kw_only=True, frozen=True):
    """Another policy's calibration on the same problems, drawn beside this one (``calibrate --beside``):
    its grid points placed against *this* calibration's random baseline and end points, and its front."""

    policy: str
    source: str  # the calibration.json it was read from, as given
    grid: list[GridEntry]
    front: list[GridPoint]


# The decoding both calibrations must share to be compared (top_p only matters when sampling).
_DECODING = ("temperature", "top_p", "max_tokens", "step_max_tokens")


def check_beside(
    other: Profile,
    *,
    source: str,
    plan: CalibrationPlan,
    dataset: str,
    problems: int,
    srm_model: str = "",
    lrm_model: str = "",
) -> None:
    """Raises ``ConfigError`` unless ``other`` (a profile ``calibrate`` wrote) ran the same problems,
    models and decoding as ``plan``: otherwise their points are not comparable. Needs no runs, so
    ``calibrate`` checks before it runs anything."""
    c = other.calibration
    where = f"{source} ({c.policy})"
    if (c.dataset, c.problems) != (dataset, problems):
        raise ConfigError(
            f"{where} ran {c.problems} problems of {c.dataset!r}, this calibration {problems} of "
            f"{dataset!r}: give the same --dataset and --limit"
        )
    for mine, theirs, role in ((srm_model, c.srm_model, "SRM"), (lrm_model, c.lrm_model, "LRM")):
        if mine and theirs and mine != theirs:
            raise ConfigError(f"{where} used the {role} {theirs!r}, this calibration {mine!r}")
    base = msgspec.to_builtins(plan.base)
    sampling = base.get("temperature") != 0 or other.params.get("temperature", 0) != 0
    for name in _DECODING:
        if name == "top_p" and not sampling:
            continue
        if name in other.params and other.params[name] != base.get(name):
            raise ConfigError(
                f"{where} ran with {name}={other.params[name]}, this calibration with {base.get(name)}"
            )


def beside_calibration(other: Profile, *, source: str, runs: CalibrationRuns) -> Beside:
    """``other`` beside this calibration: its grid points against ``runs``' random baseline and end
    points. Check it with ``check_beside`` first (before the runs): this only places the points."""
    c = other.calibration
    placed = pareto_summary(
        [GridPoint(params=g.params, accuracy=g.accuracy, srm_token_ratio=g.srm_token_ratio) for g in c.grid],
        runs.random, lrm_only=runs.lrm_only, srm_only=runs.srm_only,
    )  # fmt: skip
    return Beside(policy=c.policy, source=source, grid=placed.grid, front=placed.front)


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
    policy: str = "trigreason"  # the policy whose grid was searched
    # beats_random and margin_vs_random (here and per grid point) describe; they do not test.
    beats_random_rule: str = BEATS_RANDOM_RULE
    # Other policies' calibrations on the same problems, for the plot and the table (calibrate --beside).
    beside: list[Beside] = []

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
    beside: Sequence[Beside] = (),
) -> tuple[Profile, bool]:
    """The profile of the chosen point (see ``choose``) and whether it met the accuracy floor."""
    best, feasible = choose(runs.grid, lrm_accuracy=runs.lrm_only.accuracy, min_fraction=min_accuracy)
    versus: ParetoSummary = pareto_summary(
        runs.grid, runs.random, lrm_only=runs.lrm_only, srm_only=runs.srm_only
    )
    entry = next(g for g, r in zip(versus.grid, runs.grid, strict=True) if r is best)
    chosen = plan.grid_params[next(i for i, r in enumerate(runs.grid) if r is best)]
    params = msgspec.to_builtins(chosen)
    params.update(best.params)  # flat too, as profiles always held them (policy_params holds them as well)
    params.pop("policy", None)
    params.pop("seed", None)
    calibration = Calibration(
        dataset=dataset, problems=problems, min_accuracy_vs_lrm=min_accuracy,
        lrm_only_accuracy=runs.lrm_only.accuracy, srm_only_accuracy=runs.srm_only.accuracy, feasible=feasible,
        chosen=best.params, beats_random=entry.beats_random,
        random_accuracy_at_ratio=entry.random_accuracy_at_ratio, margin_vs_random=entry.margin_vs_random,
        grid=versus.grid, front=versus.front, random=versus.random, end_points=versus.end_points,
        srm_model=srm_model, lrm_model=lrm_model, seconds=seconds, policy=plan.policy, beside=list(beside),
    )  # fmt: skip
    return Profile(name=name, params=params, calibration=calibration), feasible
