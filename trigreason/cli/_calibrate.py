"""``trigreason calibrate``: flags in, progress, the grid table and the profile out; the work is
trigreason.eval's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from trigreason.eval import (
    Beside,
    Calibration,
    CalibrationRuns,
    ParamValue,
    Profile,
    beside_calibration,
    calibration_profile,
    check_beside,
    load_problems,
    plan_calibration,
    point_slug,
    run_calibration,
    write_calibration_report,
    write_json,
)
from trigreason.profiles import user_profile_path
from trigreason.proto import ConfigError, SessionParams

from ._app import app
from ._eval import Model, Url, checked_via, executor, progress_bars, run_async, stdout_console
from ._params import session_params
from ._policy_flags import cli_policies, policy_option

__all__: list[str] = []

_D = SessionParams()
_TEST_SPLITS = ("gsm8k", "math500", "aime24", "aime25")


# TrigReason's grid shorthands (--rho ...), in the order its run directories name them.
_SHORTHANDS = ("rho", "tau", "k", "priming_steps", "m")
_DEFAULT_RHO = "0.8,0.9,0.95,0.99"


def _floats(raw: str | None, name: str) -> list[float] | None:
    if raw is None:
        return None
    try:
        return [float(v) for v in raw.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter("comma-separated numbers", param_hint=name) from exc


def _grid_specs(shorthands: dict[str, str | None], specs: list[str]) -> dict[str, list[float]]:
    """The axes as given: TrigReason's shorthand flags first, then each ``--grid NAME=V1,V2``."""
    axes: dict[str, list[float]] = {}
    for axis, raw in shorthands.items():
        values = _floats(raw, f"--{axis.replace('_', '-')}")
        if values:
            axes[axis] = values
    for spec in specs:
        name, sep, raw = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise typer.BadParameter(f"{spec!r}: expected NAME=V1,V2,...", param_hint="--grid")
        if name in axes:
            raise typer.BadParameter(f"axis {name!r} given twice", param_hint="--grid")
        axes[name] = _floats(raw, "--grid") or []
    return axes


@app.command()
def calibrate(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="calibration split (never a test split)")] = "gsm8k-train",
    limit: Annotated[int, typer.Option(min=1, help="problems")] = 20,
    policy: policy_option(  # type: ignore[valid-type]
        only=lambda p: p.uses_srm and p.uses_lrm and bool(p.params.__struct_fields__),
        help="the policy whose parameters to calibrate",
    ) = "trigreason",
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            metavar="NAME=V1,V2,...",
            help="a grid axis: one of the policy's numeric parameters (`trigreason policies`) and the "
            "values to try; repeatable",
        ),
    ] = None,
    rho: Annotated[
        str | None,
        typer.Option(help="shorthand for --grid rho=...", show_default=f"{_DEFAULT_RHO} for trigreason"),
    ] = None,
    tau: Annotated[str | None, typer.Option(help="shorthand for --grid tau=...")] = None,
    k: Annotated[str | None, typer.Option(help="shorthand for --grid k=...")] = None,
    priming_steps: Annotated[
        str | None,
        typer.Option(
            help="shorthand for --grid priming_steps=... (default: the base's); the random baseline "
            "uses the first"
        ),
    ] = None,
    m: Annotated[str | None, typer.Option(help="shorthand for --grid m=...")] = None,
    random_p: Annotated[
        str,
        typer.Option(
            help="offload_p values of the random baseline, comma-separated (empty: end points only)"
        ),
    ] = "0.25,0.5,0.75",
    min_accuracy: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="accuracy floor as a fraction of LRM-only")
    ] = 0.9,
    name: Annotated[str, typer.Option(help="the profile's name")] = "calibrated",
    profile_out: Annotated[
        Path | None, typer.Option(help="where to write the profile [default: user config dir]")
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            help="the runs of every grid point (resumable), calibration.json, pareto.png, report.html"
        ),
    ] = Path("runs/calibrate"),
    profile: Annotated[str | None, typer.Option(help="base parameters from a profile")] = None,
    max_tokens: int = _D.max_tokens,
    step_max_tokens: int = _D.step_max_tokens,
    temperature: float = _D.temperature,
    top_p: Annotated[float, typer.Option(help="nucleus sampling (used when temperature > 0)")] = _D.top_p,
    seed: int = _D.seed,
    srm_model: Model = "srm",
    lrm_model: Model = "lrm",
    srm_url: Url = None,
    lrm_url: Url = None,
    via: Annotated[str, typer.Option(help="inproc, or a running gateway's URL")] = "inproc",
    report_only: Annotated[
        bool,
        typer.Option(help="run nothing: the profile and report from the runs under --out (all must be done)"),
    ] = False,
    beside: Annotated[
        list[Path] | None,
        typer.Option(
            help="another policy's calibration.json on the same problems, models and decoding: its points "
            "and front drawn beside this policy's, against this run's random baseline; repeatable",
        ),
    ] = None,
) -> None:
    """Grid-search a policy's parameters (TrigReason's thresholds by default): the most SRM tokens at
    accuracy >= a fraction of LRM-only; the Pareto front against the random baseline and the LRM-only
    and SRM-only end points."""
    if dataset in _TEST_SPLITS:
        raise typer.BadParameter("calibrate on a calibration split (e.g. gsm8k-train), never a test split")
    base = session_params(
        ctx, profile,
        {"max_tokens": max_tokens, "step_max_tokens": step_max_tokens, "temperature": temperature,
         "top_p": top_p, "seed": seed},
    )  # fmt: skip
    shorthands = dict(zip(_SHORTHANDS, (rho, tau, k, priming_steps, m), strict=True))
    on_grid = {g.partition("=")[0].strip().replace("-", "_") for g in grid or []}
    if policy == "trigreason":
        # rho and priming_steps always (the run directories are named after them: rho0.9-priming_steps2);
        # rho's values by default, else the base parameters' (a profile's), else TrigReason's defaults.
        own = cli_policies().resolve(msgspec.structs.replace(base, policy="trigreason"))[1]
        for axis, fallback in (("rho", own.rho), ("priming_steps", own.priming_steps)):
            if axis not in on_grid and not _floats(shorthands[axis], f"--{axis.replace('_', '-')}"):
                shorthands[axis] = _DEFAULT_RHO if axis == "rho" and rho is None else str(fallback)
    axes: dict[str, list[ParamValue]] = {
        name: list(values) for name, values in _grid_specs(shorthands, grid or []).items()
    }
    try:
        plan = plan_calibration(
            base, axes, _floats(random_p, "--random-p") or [], policy=policy, registry=cli_policies()
        )
    except ConfigError as exc:
        raise typer.BadParameter(exc.message) from exc
    via = checked_via(via)
    console = Console(stderr=True)
    problems = load_problems(dataset, limit=limit)
    # Read and checked before anything runs, so that a wrong file fails in a second, not after the grid.
    others = [(str(path), _read_profile(path, "--beside")) for path in beside or []]
    models = {"srm_model": srm_url or srm_model, "lrm_model": lrm_url or lrm_model}
    try:
        for source, other in others:
            check_beside(other, source=source, plan=plan, dataset=dataset, problems=len(problems), **models)
    except ConfigError as exc:
        raise typer.BadParameter(exc.message, param_hint="--beside") from exc

    async def main() -> CalibrationRuns:
        if report_only:
            return await run_calibration(plan, problems, executor=None, out_dir=out)
        async with executor(via, srm_model, lrm_model, srm_url, lrm_url, console) as ex:
            return await run_calibration(
                plan, problems, executor=ex, out_dir=out, progress=progress_bars(console)
            )

    started = time.time()
    runs = run_async(main, console, out)
    seconds = round(time.time() - started, 1)
    if report_only:  # the time the runs took, not the time to read them back
        seconds = _previous_seconds(out / "calibration.json", seconds)
    placed: list[Beside] = [beside_calibration(other, source=source, runs=runs) for source, other in others]
    doc, feasible = calibration_profile(
        name, plan, runs, dataset=dataset, problems=len(problems), min_accuracy=min_accuracy,
        seconds=seconds, beside=placed, **models,
    )  # fmt: skip
    c = doc.calibration
    stdout_console().print(_calibration_table(c))
    path = profile_out or user_profile_path(name)
    write_json(path, doc)
    write_json(out / "calibration.json", doc)
    with console.status("writing the report..."):
        write_calibration_report(out, c, policies=cli_policies())
    if not feasible:
        console.print(
            f"[yellow]no point reached {min_accuracy:.0%} of LRM-only accuracy; chose the most accurate[/]"
        )
    word = "is above" if c.beats_random else "[yellow]is not above[/]"
    console.print(
        f"the chosen point {word} the random baseline at its SRM token ratio "
        f"({c.chosen_entry().accuracy:.3f} against {c.random_accuracy_at_ratio:.3f}, margin "
        f"{c.margin_vs_random:+.3f}); descriptive, not a test: eval --matched-random on a test split decides"
    )
    console.print(f"wrote {out / 'calibration.json'}, {out / 'pareto.png'}, {out / 'report.html'}")
    console.print(f"wrote profile {name!r} to {path}; use it with --profile {path}")


def _read_profile(path: Path, hint: str) -> Profile:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Profile)
    except OSError as exc:
        raise typer.BadParameter(f"{path}: {exc.strerror}", param_hint=hint) from exc
    except msgspec.DecodeError as exc:
        raise typer.BadParameter(f"{path} is not a calibration.json ({exc})", param_hint=hint) from exc


def _previous_seconds(path: Path, default: float) -> float:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Profile).calibration.seconds
    except (OSError, msgspec.DecodeError):
        return default


def _calibration_table(c: Calibration) -> Table:
    lrm_acc = c.end_points["lrm-only"].accuracy
    table = Table(title=f"{c.dataset}, {c.problems} problems; LRM-only accuracy {lrm_acc:.3f}")
    for col in ("point", "accuracy", "SRM token ratio", "random at ratio", ""):
        table.add_column(col, justify="left" if col in ("point", "") else "right")
    for g in c.grid:
        notes = ["front" if g.on_front else "", "chosen" if g.params == c.chosen else ""]
        notes.append("above random" if g.beats_random else "")
        table.add_row(
            point_slug(g.params), f"{g.accuracy:.3f}", f"{g.srm_token_ratio:.2f}",
            f"{g.random_accuracy_at_ratio:.3f}", ", ".join(n for n in notes if n),
        )  # fmt: skip
    for r in c.random:
        table.add_row(
            f"random offload_p{r.params.get('offload_p')}", f"{r.accuracy:.3f}",
            f"{r.srm_token_ratio:.2f}", "", "random baseline",
        )  # fmt: skip

    for end, e in c.end_points.items():
        table.add_row(end, f"{e.accuracy:.3f}", f"{e.srm_token_ratio:.2f}", "", "end point")
    for other in c.beside:
        for g in other.grid:
            notes = [f"beside: {other.policy}", "its front" if g.on_front else ""]
            notes.append("above random" if g.beats_random else "")
            table.add_row(
                f"{other.policy} {point_slug(g.params)}", f"{g.accuracy:.3f}", f"{g.srm_token_ratio:.2f}",
                f"{g.random_accuracy_at_ratio:.3f}", ", ".join(n for n in notes if n),
            )  # fmt: skip
    return table
