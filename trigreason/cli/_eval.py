"""``trigreason eval`` and ``trigreason calibrate``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trigreason.eval import (
    EdgeCloudModel,
    Executor,
    GatewayExecutor,
    GridPoint,
    InProcessExecutor,
    choose,
    complete_rows,
    grid,
    load_problems,
    pareto_summary,
    read_rows,
    replaced_share,
    run_eval,
    summarize,
    write_calibration_report,
    write_report,
)
from trigreason.profiles import user_profile_path
from trigreason.proto import SessionParams, TrigReasonError
from trigreason.services.worker.backends import make_backend
from trigreason.stack import StackSpec, inference_servers

from ._app import app
from ._params import session_params

__all__: list[str] = []

_T = TypeVar("_T")
_D = SessionParams()
_EC = EdgeCloudModel()
_POLICIES = ("trigreason", "specreason", "lrm-only", "srm-only")  # run by default
_ACCEPTED = (*_POLICIES, "random")  # the random baseline on request (--policies random, with --params)
_Model = Annotated[str, typer.Option(help="srm, lrm, tiny, a GGUF path or hf://REPO/FILE")]
_Url = Annotated[
    str | None, typer.Option(help="an existing inference server [env: TRIGREASON_SRM_URL/_LRM_URL]")
]


@contextlib.asynccontextmanager
async def _executor(
    via: str,
    srm_model: str,
    lrm_model: str,
    srm_url: str | None,
    lrm_url: str | None,
    say: Callable[[str], None],
) -> AsyncIterator[Executor]:
    if via != "inproc":
        if not via.startswith(("http://", "https://")):
            raise typer.BadParameter("use inproc or a gateway URL (http://...)", param_hint="--via")
        gateway = GatewayExecutor(via, token=os.environ.get("TRIGREASON_API_TOKEN"))
        try:
            yield gateway
        finally:
            await gateway.aclose()
        return
    spec = StackSpec(
        srm_url=srm_url or os.environ.get("TRIGREASON_SRM_URL"),
        lrm_url=lrm_url or os.environ.get("TRIGREASON_LRM_URL"),
        srm_model=srm_model,
        lrm_model=lrm_model,
    )
    async with inference_servers(spec, say=say) as urls:
        srm = await make_backend(urls["srm"], name="srm")
        lrm = await make_backend(urls["lrm"], name="lrm")
        try:
            yield InProcessExecutor(srm, lrm)
        finally:
            await srm.aclose()
            await lrm.aclose()


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"), console=console,
    )  # fmt: skip


async def _run_with_progress(
    console: Console, label: str, executor: Executor, **kwargs: Any
) -> list[dict[str, Any]]:
    correct: dict[str, list[int]] = {}
    with _progress(console) as bar:
        task = bar.add_task(label, total=None, status="")

        def on_progress(row: dict[str, Any] | None, done: int, total: int) -> None:
            if row is not None:
                tally = correct.setdefault(row["policy"], [0, 0])
                tally[0] += int(row["correct"])
                tally[1] += 1
            status = "  ".join(f"{p} {c}/{n}" for p, (c, n) in sorted(correct.items()))
            bar.update(task, completed=done, total=total, status=status)
            if row is not None and not console.is_terminal:  # a log, not a live bar: one line per run
                mark = "correct" if row["correct"] else "wrong"
                console.print(
                    f"{label} [{done}/{total}] {row['problem_id']} {row['policy']} {mark} "
                    f"({row['end_reason']}, {row['run_s']:.1f}s)  {status}",
                    soft_wrap=True,
                )

        return await run_eval(executor=executor, on_progress=on_progress, **kwargs)


def _cost_model(
    price_in: float, price_cached: float, price_out: float, srm_price: float, rtt: float
) -> EdgeCloudModel:
    try:
        return EdgeCloudModel(
            lrm_input_usd_per_m=price_in, lrm_cached_input_usd_per_m=price_cached,
            lrm_output_usd_per_m=price_out, srm_usd_per_m=srm_price, round_trip_s=rtt,
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['problems']} problems, {summary['runs']} runs")
    for col in ("policy", "accuracy", "vs LRM", "SRM token ratio", "SRM steps", "LRM calls", "wall s",
                "edge latency vs LRM", "API cost vs LRM"):  # fmt: skip
        table.add_column(col, justify="left" if col == "policy" else "right")

    def rel(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}x"

    for name, p in summary["policies"].items():
        ec = p["edge_cloud"]
        table.add_row(
            name, f"{p['accuracy']:.3f} ± {p['accuracy_stderr']:.3f}", rel(p["accuracy_vs_lrm"]),
            f"{p['srm_token_ratio']:.2f}", f"{p['srm_steps_offloaded_ratio']:.2f}", f"{p['lrm_calls']:.1f}",
            f"{p['wall_s']:.1f}", rel(ec["latency_vs_lrm"]), rel(ec["api_cost_vs_lrm"]),
        )  # fmt: skip
    return table


def _run_async(main: Callable[[], Coroutine[Any, Any, _T]], console: Console, results: Path) -> _T:
    try:
        return asyncio.run(main())
    except TrigReasonError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        console.print(f"interrupted: finished runs are in {results}; run the same command again to resume")
        raise typer.Exit(130) from None


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


@app.command(name="eval")
def eval_(
    ctx: typer.Context,
    dataset: Annotated[
        str, typer.Option(help="gsm8k, gsm8k-train, math500, aime24, aime25 or a JSONL path")
    ] = "gsm8k",
    limit: Annotated[int | None, typer.Option(min=1, help="the first N problems")] = None,
    offset: Annotated[int, typer.Option(min=0, help="skip the first N problems")] = 0,
    samples: Annotated[int, typer.Option(min=1, help="runs per problem and policy (seeds differ)")] = 1,
    policies: Annotated[str, typer.Option(help="comma-separated")] = ",".join(_POLICIES),
    out: Annotated[Path, typer.Option(help="results.jsonl, summary.json and report.html go here")] = Path(
        "runs/eval"
    ),
    via: Annotated[str, typer.Option(help="inproc, or a running gateway's URL")] = "inproc",
    concurrency: Annotated[int, typer.Option(min=1, help="runs at once")] = 1,
    profile: Annotated[str | None, typer.Option(help="parameters from a profile (name or path)")] = None,
    priming_steps: int = _D.priming_steps,
    tau: float = _D.tau,
    rho: float = _D.rho,
    k: int = _D.k,
    m: int = _D.m,
    offload_p: Annotated[
        float, typer.Option(help="the random policy's replacement probability (--policies ...,random)")
    ] = _D.offload_p,
    hesitation: Annotated[str | None, typer.Option(help="comma-separated words")] = None,
    max_tokens: int = _D.max_tokens,
    step_max_tokens: int = _D.step_max_tokens,
    temperature: float = _D.temperature,
    top_p: Annotated[float, typer.Option(help="nucleus sampling (used when temperature > 0)")] = _D.top_p,
    seed: Annotated[int, typer.Option(help="base seed; each problem's sample gets its own")] = _D.seed,
    srm_model: _Model = "srm",
    lrm_model: _Model = "lrm",
    srm_url: _Url = None,
    lrm_url: _Url = None,
    price_in: Annotated[
        float, typer.Option(help="LRM input, USD per million tokens")
    ] = _EC.lrm_input_usd_per_m,
    price_cached: Annotated[
        float, typer.Option(help="LRM cached input, USD/M")
    ] = _EC.lrm_cached_input_usd_per_m,
    price_out: Annotated[float, typer.Option(help="LRM output, USD/M")] = _EC.lrm_output_usd_per_m,
    srm_price: Annotated[float, typer.Option(help="local SRM, USD/M tokens")] = _EC.srm_usd_per_m,
    rtt: Annotated[float, typer.Option(help="network round trip per LRM call (s)")] = _EC.round_trip_s,
    report_only: Annotated[
        bool, typer.Option(help="run nothing: summary and report from the problems whose runs are all done")
    ] = False,
    matched_random: Annotated[
        bool,
        typer.Option(
            help="also run the random baseline at TrigReason's replaced share of SRM steps, same problems "
            "and seeds, and compare them pairwise (summary: trigreason_vs_random)"
        ),
    ] = False,
) -> None:
    """Run problems under every policy with the same seeds; grade; write results, summary and report."""
    wanted = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in _ACCEPTED]
    if unknown or not wanted:
        raise typer.BadParameter(
            f"unknown policy {unknown}; use {', '.join(_ACCEPTED)}", param_hint="--policies"
        )
    if matched_random and "trigreason" not in wanted:
        raise typer.BadParameter("--matched-random compares with trigreason: add it", param_hint="--policies")
    params = session_params(
        ctx, profile,
        {"priming_steps": priming_steps, "tau": tau, "rho": rho, "k": k, "m": m, "hesitation": hesitation,
         "max_tokens": max_tokens, "step_max_tokens": step_max_tokens, "temperature": temperature,
         "top_p": top_p, "seed": seed, "offload_p": offload_p},
    )  # fmt: skip
    model = _cost_model(price_in, price_cached, price_out, srm_price, rtt)
    console = Console(stderr=True)
    try:
        problems = load_problems(dataset, limit=limit, offset=offset)
    except TrigReasonError as exc:
        raise typer.BadParameter(exc.message, param_hint="--dataset") from exc

    async def main() -> list[dict[str, Any]]:
        async with _executor(
            via, srm_model, lrm_model, srm_url, lrm_url, lambda m: console.print(f"[dim]{m}[/]")
        ) as ex:
            rows = await _run_with_progress(
                console, f"{dataset}", ex, problems=problems, policies=wanted, samples=samples, params=params,
                out_dir=out, concurrency=concurrency,
            )  # fmt: skip
            if not matched_random:
                return rows
            # The baseline hands the LRM as many SRM steps as TrigReason did on this data set.
            p = replaced_share(r["stats"] for r in rows if r["policy"] == "trigreason")
            console.print(
                f"random baseline at offload_p {p:.3f} (the share of SRM steps TrigReason replaced)"
            )
            matched = msgspec.structs.replace(params, offload_p=p)
            return rows + await _run_with_progress(
                console, f"{dataset} random", ex, problems=problems, policies=["random"], samples=samples,
                params=matched, out_dir=out, concurrency=concurrency,
            )  # fmt: skip

    if report_only:
        done_policies = [*wanted, "random"] if matched_random and "random" not in wanted else wanted
        rows = complete_rows(read_rows(out / "results.jsonl"), problems, done_policies, samples)
        if not rows:
            console.print(f"[red]error:[/] {out / 'results.jsonl'} has no problem with every run done")
            raise typer.Exit(2)
        console.print(
            f"report from the {len(rows) // (len(done_policies) * samples)} problems with every run done"
        )
    else:
        rows = _run_async(main, console, out / "results.jsonl")
    summary = summarize(rows, model)
    summary["dataset"] = dataset
    summary["params"] = msgspec.to_builtins(params)
    _write_json(out / "summary.json", summary)
    with console.status("writing the report..."):
        write_report(out / "report.html", rows, summary, plots_dir=out / "plots")
    Console(width=None if sys.stdout.isatty() else 160).print(_summary_table(summary))
    versus = summary.get("trigreason_vs_random")
    if versus is not None:
        low, high = versus["accuracy_difference_ci95"]
        console.print(
            f"trigreason vs random over {versus['pairs']} pairs: {versus['trigreason_accuracy']:.3f} against "
            f"{versus['random_accuracy']:.3f}, difference {versus['accuracy_difference']:+.3f} "
            f"[{low:+.3f}, {high:+.3f}], McNemar p {versus['mcnemar_p']:.3g}: {versus['verdict']}"
        )
    console.print(f"wrote {out / 'results.jsonl'}, {out / 'summary.json'}, {out / 'report.html'}")


def _floats(raw: str | None, name: str) -> list[float] | None:
    if raw is None:
        return None
    try:
        return [float(v) for v in raw.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter("comma-separated numbers", param_hint=name) from exc


@app.command()
def calibrate(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="calibration split (never a test split)")] = "gsm8k-train",
    limit: Annotated[int, typer.Option(min=1, help="problems")] = 20,
    rho: Annotated[str, typer.Option(help="rho values to try, comma-separated")] = "0.8,0.9,0.95,0.99",
    tau: Annotated[str | None, typer.Option(help="tau values to try")] = None,
    k: Annotated[str | None, typer.Option(help="k values to try")] = None,
    priming_steps: Annotated[
        str | None,
        typer.Option(help="n values to try [default: the base's]; the random baseline uses the first"),
    ] = None,
    m: Annotated[str | None, typer.Option(help="m values to try")] = None,
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
    srm_model: _Model = "srm",
    lrm_model: _Model = "lrm",
    srm_url: _Url = None,
    lrm_url: _Url = None,
    via: Annotated[str, typer.Option(help="inproc, or a running gateway's URL")] = "inproc",
) -> None:
    """Grid-search the trigger thresholds: the most SRM tokens at accuracy >= a fraction of LRM-only;
    the Pareto front against the random baseline and the LRM-only and SRM-only end points."""
    if dataset in ("gsm8k", "math500", "aime24", "aime25"):
        raise typer.BadParameter("calibrate on a calibration split (e.g. gsm8k-train), never a test split")
    base = session_params(
        ctx, profile,
        {"max_tokens": max_tokens, "step_max_tokens": step_max_tokens, "temperature": temperature,
         "top_p": top_p, "seed": seed},
    )  # fmt: skip
    # rho and priming_steps always (the run directories are named after them: rho0.9-priming_steps2).
    axes: dict[str, list[Any]] = {"rho": _floats(rho, "--rho") or [base.rho]}
    for axis, raw, cast in (
        ("tau", tau, float),
        ("k", k, int),
        ("priming_steps", priming_steps, int),
        ("m", m, int),
    ):
        values = _floats(raw, f"--{axis}")
        if values:
            axes[axis] = [cast(v) for v in values]
        elif axis == "priming_steps":
            axes[axis] = [base.priming_steps]
    points = grid(axes)
    offload_ps = _floats(random_p, "--random-p") or []
    random_base = msgspec.structs.replace(base, priming_steps=axes["priming_steps"][0])
    try:
        grid_params = [msgspec.structs.replace(base, **pt) for pt in points]
        random_params = [msgspec.structs.replace(random_base, offload_p=p) for p in offload_ps]
        for gp in (*grid_params, *random_params):
            msgspec.convert(msgspec.to_builtins(gp), SessionParams)  # range checks
    except (TypeError, msgspec.ValidationError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    console = Console(stderr=True)
    problems = load_problems(dataset, limit=limit)

    def slug(pt: dict[str, Any]) -> str:
        return "-".join(f"{key}{value}" for key, value in pt.items())

    async def main() -> tuple[GridPoint, GridPoint, list[GridPoint], list[GridPoint]]:
        async with _executor(
            via, srm_model, lrm_model, srm_url, lrm_url, lambda msg: console.print(f"[dim]{msg}[/]")
        ) as ex:

            async def point(
                label: str, policy: str, params: SessionParams, where: str, pt: dict[str, Any]
            ) -> GridPoint:
                rows = await _run_with_progress(
                    console, label, ex, problems=problems, samples=1, policies=[policy], params=params,
                    out_dir=out / where,
                )  # fmt: skip
                s = summarize(rows, EdgeCloudModel())["policies"][policy]
                return GridPoint(params=pt, accuracy=s["accuracy"], srm_token_ratio=s["srm_token_ratio"])

            lrm = await point("LRM-only", "lrm-only", base, "lrm-only", {"policy": "lrm-only"})
            srm = await point("SRM-only", "srm-only", base, "srm-only", {"policy": "srm-only"})
            randoms: list[GridPoint] = []
            for i, (p, rp) in enumerate(zip(offload_ps, random_params, strict=True)):
                pt = {"offload_p": p, "priming_steps": rp.priming_steps}
                where = f"random-offload_p{p}"
                randoms.append(
                    await point(f"random {i + 1}/{len(offload_ps)} {where}", "random", rp, where, pt)
                )
            results: list[GridPoint] = []
            for i, (pt, gp) in enumerate(zip(points, grid_params, strict=True)):
                label = f"{i + 1}/{len(points)} {slug(pt)}"
                results.append(await point(label, "trigreason", gp, slug(pt), pt))
            return lrm, srm, randoms, results

    started = time.time()
    lrm, srm, randoms, results = _run_async(main, console, out)
    best, feasible = choose(results, lrm_accuracy=lrm.accuracy, min_fraction=min_accuracy)
    versus = pareto_summary(results, randoms, lrm_only=lrm, srm_only=srm)
    chosen_entry = next(g for g, r in zip(versus["grid"], results, strict=True) if r is best)
    Console(width=None if sys.stdout.isatty() else 160).print(
        _calibration_table(dataset, len(problems), versus, best.params, slug)
    )
    chosen = msgspec.to_builtins(msgspec.structs.replace(base, **best.params))
    chosen.pop("policy", None)
    chosen.pop("seed", None)
    calibration = {
        "dataset": dataset, "problems": len(problems), "min_accuracy_vs_lrm": min_accuracy,
        "lrm_only_accuracy": lrm.accuracy, "srm_only_accuracy": srm.accuracy, "feasible": feasible,
        "chosen": best.params,
        "beats_random": chosen_entry["beats_random"],
        "random_accuracy_at_ratio": chosen_entry["random_accuracy_at_ratio"],
        "margin_vs_random": chosen_entry["margin_vs_random"],
        **versus,
        "srm_model": srm_url or srm_model, "lrm_model": lrm_url or lrm_model,
        "seconds": round(time.time() - started, 1),
    }  # fmt: skip
    doc = {"name": name, "params": chosen, "calibration": calibration}
    path = profile_out or user_profile_path(name)
    _write_json(path, doc)
    _write_json(out / "calibration.json", doc)
    with console.status("writing the report..."):
        write_calibration_report(out, calibration)
    if not feasible:
        console.print(
            f"[yellow]no point reached {min_accuracy:.0%} of LRM-only accuracy; chose the most accurate[/]"
        )
    word = "beats" if calibration["beats_random"] else "[yellow]does not beat[/]"
    console.print(
        f"the chosen point {word} the random baseline at its SRM token ratio "
        f"({best.accuracy:.3f} against {calibration['random_accuracy_at_ratio']:.3f})"
    )
    console.print(f"wrote {out / 'calibration.json'}, {out / 'pareto.png'}, {out / 'report.html'}")
    console.print(f"wrote profile {name!r} to {path}; use it with --profile {path}")


def _calibration_table(
    dataset: str,
    problems: int,
    versus: dict[str, Any],
    chosen: dict[str, Any],
    slug: Callable[[dict[str, Any]], str],
) -> Table:
    lrm_acc = versus["end_points"]["lrm-only"]["accuracy"]
    table = Table(title=f"{dataset}, {problems} problems; LRM-only accuracy {lrm_acc:.3f}")
    for col in ("point", "accuracy", "SRM token ratio", "random at ratio", ""):
        table.add_column(col, justify="left" if col in ("point", "") else "right")
    for g in versus["grid"]:
        notes = ["front" if g["on_front"] else "", "chosen" if g["params"] == chosen else ""]
        notes.append("beats random" if g["beats_random"] else "")
        table.add_row(
            slug(g["params"]), f"{g['accuracy']:.3f}", f"{g['srm_token_ratio']:.2f}",
            f"{g['random_accuracy_at_ratio']:.3f}", ", ".join(n for n in notes if n),
        )  # fmt: skip
    for r in versus["random"]:
        table.add_row(
            f"random offload_p{r['params']['offload_p']}", f"{r['accuracy']:.3f}",
            f"{r['srm_token_ratio']:.2f}", "", "random baseline",
        )  # fmt: skip
    for name, e in versus["end_points"].items():
        table.add_row(name, f"{e['accuracy']:.3f}", f"{e['srm_token_ratio']:.2f}", "", "end point")
    return table
