"""``trigreason eval``: flags in, a progress bar and the summary table out; the work is trigreason.eval's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trigreason.eval import (
    EdgeCloudModel,
    Executor,
    OnProgress,
    Row,
    Summary,
    check_policies,
    check_via,
    default_policies,
    evaluate,
    evaluated_policies,
    load_problems,
    open_executor,
    stored_rows,
    summarize,
    write_json,
    write_report,
)
from trigreason.proto import ConfigError, SessionParams, TrigReasonError

from ._app import app
from ._params import session_params
from ._policy_flags import cli_policies, with_policy_flags

__all__: list[str] = []

_T = TypeVar("_T")
_D = SessionParams()
_EC = EdgeCloudModel()
Model = Annotated[str, typer.Option(help="srm, lrm, tiny, a GGUF path or hf://REPO/FILE")]
Url = Annotated[
    str | None, typer.Option(help="an existing inference server [env: TRIGREASON_SRM_URL/_LRM_URL]")
]


def checked_via(via: str) -> str:
    try:
        return check_via(via)
    except ConfigError as exc:
        raise typer.BadParameter(exc.message, param_hint="--via") from exc


def executor(
    via: str, srm_model: str, lrm_model: str, srm_url: str | None, lrm_url: str | None, console: Console
) -> contextlib.AbstractAsyncContextManager[Executor]:
    """trigreason.eval's executor, its messages dimmed."""
    return open_executor(
        via, srm_model=srm_model, lrm_model=lrm_model, srm_url=srm_url, lrm_url=lrm_url, env=os.environ,
        say=lambda msg: console.print(f"[dim]{msg}[/]"),
    )  # fmt: skip


def progress_bars(console: Console) -> Callable[[str], contextlib.AbstractContextManager[OnProgress]]:
    """One bar per labelled batch of runs; a line per run when stderr is a log, not a terminal."""

    @contextlib.contextmanager
    def bar(label: str) -> Iterator[OnProgress]:
        correct: dict[str, list[int]] = {}
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=console,
        ) as progress:  # fmt: skip
            task = progress.add_task(label, total=None, status="")

            def on_progress(row: Row | None, done: int, total: int) -> None:
                if row is not None:
                    tally = correct.setdefault(row.policy, [0, 0])
                    tally[0] += int(row.correct)
                    tally[1] += 1
                status = "  ".join(f"{p} {c}/{n}" for p, (c, n) in sorted(correct.items()))
                progress.update(task, completed=done, total=total, status=status)
                if row is not None and not console.is_terminal:
                    mark = "correct" if row.correct else "wrong"
                    console.print(
                        f"{label} [{done}/{total}] {row.problem_id} {row.policy} {mark} "
                        f"({row.end_reason}, {row.run_s:.1f}s)  {status}",
                        soft_wrap=True,
                    )

            yield on_progress

    return bar


def run_async(main: Callable[[], Coroutine[Any, Any, _T]], console: Console, results: Path) -> _T:
    try:
        return asyncio.run(main())
    except TrigReasonError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        console.print(f"interrupted: finished runs are in {results}; run the same command again to resume")
        raise typer.Exit(130) from None


def stdout_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else 160)


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


def _summary_table(summary: Summary) -> Table:
    table = Table(title=f"{summary.problems} problems, {summary.runs} runs")
    for col in ("policy", "accuracy", "vs LRM", "SRM token ratio", "SRM steps", "LRM calls", "wall s",
                "edge latency vs LRM", "API cost vs LRM"):  # fmt: skip
        table.add_column(col, justify="left" if col == "policy" else "right")

    def rel(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}x"

    for name, p in summary.policies.items():
        ec = p.edge_cloud
        table.add_row(
            name, f"{p.accuracy:.3f} ± {p.accuracy_stderr:.3f}", rel(p.accuracy_vs_lrm),
            f"{p.srm_token_ratio:.2f}", f"{p.srm_steps_offloaded_ratio:.2f}", f"{p.lrm_calls:.1f}",
            f"{p.wall_s:.1f}", rel(ec.latency_vs_lrm), rel(ec.api_cost_vs_lrm),
        )  # fmt: skip
    return table


@app.command(name="eval")
@with_policy_flags
def eval_(
    ctx: typer.Context,
    dataset: Annotated[
        str, typer.Option(help="gsm8k, gsm8k-train, math500, aime24, aime25 or a JSONL path")
    ] = "gsm8k",
    limit: Annotated[int | None, typer.Option(min=1, help="the first N problems")] = None,
    offset: Annotated[int, typer.Option(min=0, help="skip the first N problems")] = 0,
    samples: Annotated[int, typer.Option(min=1, help="runs per problem and policy (seeds differ)")] = 1,
    policies: Annotated[
        str, typer.Option(help="comma-separated (`trigreason policies` lists them)")
    ] = ",".join(default_policies(cli_policies())),
    out: Annotated[Path, typer.Option(help="results.jsonl, summary.json and report.html go here")] = Path(
        "runs/eval"
    ),
    via: Annotated[str, typer.Option(help="inproc, or a running gateway's URL")] = "inproc",
    concurrency: Annotated[int, typer.Option(min=1, help="runs at once")] = 1,
    profile: Annotated[str | None, typer.Option(help="parameters from a profile (name or path)")] = None,
    max_tokens: int = _D.max_tokens,
    step_max_tokens: int = _D.step_max_tokens,
    temperature: float = _D.temperature,
    top_p: Annotated[float, typer.Option(help="nucleus sampling (used when temperature > 0)")] = _D.top_p,
    seed: Annotated[int, typer.Option(help="base seed; each problem's sample gets its own")] = _D.seed,
    srm_model: Model = "srm",
    lrm_model: Model = "lrm",
    srm_url: Url = None,
    lrm_url: Url = None,
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
    matched_to: Annotated[
        str,
        typer.Option(
            help="the policy whose replaced share --matched-random gives the random baseline (summary: "
            "vs_random.<policy> unless trigreason)"
        ),
    ] = "trigreason",
) -> None:
    """Run problems under every policy with the same seeds; grade; write results, summary and report.

    Each policy parameter has its flag (see `trigreason policies`); each policy takes its own."""
    try:
        wanted = check_policies(
            [p.strip() for p in policies.split(",") if p.strip()],
            matched_random=matched_random,
            policies=cli_policies(),
            matched_to=matched_to,
        )
    except ConfigError as exc:
        raise typer.BadParameter(exc.message, param_hint="--policies") from exc
    params = session_params(
        ctx, profile,
        {"max_tokens": max_tokens, "step_max_tokens": step_max_tokens, "temperature": temperature,
         "top_p": top_p, "seed": seed},
    )  # fmt: skip
    model = _cost_model(price_in, price_cached, price_out, srm_price, rtt)
    via = checked_via(via)
    console = Console(stderr=True)
    try:
        problems = load_problems(dataset, limit=limit, offset=offset)
    except TrigReasonError as exc:
        raise typer.BadParameter(exc.message, param_hint="--dataset") from exc

    async def main() -> list[Row]:
        async with executor(via, srm_model, lrm_model, srm_url, lrm_url, console) as ex:
            return await evaluate(
                problems, wanted, samples=samples, params=params, executor=ex, out_dir=out,
                concurrency=concurrency, matched_random=matched_random, matched_to=matched_to, label=dataset,
                progress=progress_bars(console), say=console.print,
            )  # fmt: skip

    if report_only:
        done_policies = evaluated_policies(wanted, matched_random=matched_random)
        try:
            rows = stored_rows(out, problems, done_policies, samples)
        except ConfigError as exc:
            console.print(f"[red]error:[/] {exc.message}")
            raise typer.Exit(2) from exc
        console.print(
            f"report from the {len(rows) // (len(done_policies) * samples)} problems with every run done"
        )
    else:
        rows = run_async(main, console, out / "results.jsonl")
    summary = summarize(rows, model, dataset=dataset, params=params)
    write_json(out / "summary.json", summary)
    with console.status("writing the report..."):
        write_report(out / "report.html", rows, summary, plots_dir=out / "plots", policies=cli_policies())
    stdout_console().print(_summary_table(summary))
    for versus in (summary.trigreason_vs_random, *summary.vs_random.values()):
        if versus is None:
            continue
        low, high = versus.accuracy_difference_ci95
        console.print(
            f"{versus.policy} vs random over {versus.pairs} pairs: {versus.policy_accuracy:.3f} against "
            f"{versus.random_accuracy:.3f}, difference {versus.accuracy_difference:+.3f} "
            f"[{low:+.3f}, {high:+.3f}] (exact 95%): {versus.verdict}"
        )
    console.print(f"wrote {out / 'results.jsonl'}, {out / 'summary.json'}, {out / 'report.html'}")
