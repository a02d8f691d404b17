from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from trigreason.proto import DEFAULT_HESITATION, SessionParams

from ._replay import ReplayError, read_steps, replay, write_jsonl

__all__ = ["app", "main"]

_DEFAULTS = SessionParams()

app = typer.Typer(
    name="trigreason",
    help="TrigReason: a small reasoning model writes most steps, a large one steps in when a trigger fires.",
    no_args_is_help=True,
    add_completion=False,
)
triggers_app = typer.Typer(help="Inspect trigger policies offline.", no_args_is_help=True)
app.add_typer(triggers_app, name="triggers")
# Command groups defined in their own modules register themselves here (one line each).
serve_app = typer.Typer(help="Run one service or server in the foreground.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
models_app = typer.Typer(help="Fetch and list the default models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _words(value: str | None) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_HESITATION
    words = tuple(w.strip() for w in value.split(",") if w.strip())
    if not words:
        raise typer.BadParameter("give at least one word, e.g. --hesitation wait,hmm")
    return words


@triggers_app.command("replay")
def replay_command(
    file: Annotated[
        Path,
        typer.Argument(
            help='JSONL, one SRM step per line: {"text": str, "token_logprobs": [float, ...]}; "-" is stdin.'
        ),
    ],
    tau: Annotated[float, typer.Option(min=0.0, help="Token perplexity threshold.")] = _DEFAULTS.tau,
    rho: Annotated[float, typer.Option(min=0.0, max=1.0, help="Offload when r_s > rho.")] = _DEFAULTS.rho,
    k: Annotated[int, typer.Option(min=1, help="Intervene after k hesitating steps in a row.")] = _DEFAULTS.k,
    m: Annotated[int, typer.Option(min=1, help="LRM steps per intervention.")] = _DEFAULTS.m,
    hesitation: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated hesitation words [default: {','.join(DEFAULT_HESITATION)}]"),
    ] = None,
    table: Annotated[bool, typer.Option("--table", help="A readable table instead of JSON lines.")] = False,
    policy: Annotated[
        str, typer.Option(help="trigreason, or random (the matched baseline: --offload-p, --seed)")
    ] = "trigreason",
    offload_p: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="random: replacement probability")
    ] = _DEFAULTS.offload_p,
    seed: Annotated[int, typer.Option(min=0, help="random: the session's seed")] = _DEFAULTS.seed,
) -> None:
    """Print each step's r_s, hesitation and verdict: why a trigger fired."""
    if tau <= 0:
        raise typer.BadParameter("tau must be > 0", param_hint="--tau")
    if policy not in ("trigreason", "random"):
        raise typer.BadParameter("trigreason or random", param_hint="--policy")
    words = _words(hesitation)
    try:
        lines = sys.stdin.readlines() if str(file) == "-" else file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
    try:
        steps = read_steps(lines, source=str(file))
        rows = list(
            replay(
                steps,
                tau=tau,
                rho=rho,
                k=k,
                m=m,
                hesitation=words,
                policy=policy,
                offload_p=offload_p,
                seed=seed,
            )
        )
    except ReplayError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not table:
        write_jsonl(rows, sys.stdout)
        return
    t = Table(title=f"tau={tau} rho={rho} k={k} m={m}")
    for col in ("step", "tokens", "r_s", "hesitates", "run", "verdict"):
        t.add_column(col, justify="right" if col not in ("verdict",) else "left")
    style = {"accept": "green", "offload": "yellow", "intervene": "red", "random": "magenta"}
    for r in rows:
        t.add_row(
            str(r.index),
            str(r.tokens),
            f"{r.r_s:.3f}",
            "yes" if r.hesitation else "",
            str(r.hesitation_run),
            f"[{style[r.verdict]}]{r.verdict}[/]",
        )
    Console().print(t)


def main() -> None:
    app()


# Commands defined in their own modules register themselves on these groups when imported.
from . import _calibrate, _eval, _models, _serve_services, _serve_sim, _serve_tgi, _solve, _wan  # noqa: E402, F401
