from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from trigreason.services.trigger_evaluator.policies import PolicyError

from ._policy_flags import cli_policies, policy_flag_values, policy_option, with_policy_flags
from ._replay import ReplayError, read_steps, replay, write_jsonl

__all__ = ["app", "main"]


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


# Replace verdicts in the replay table, by order of first appearance (accept is always green).
_PALETTE = ("yellow", "red", "magenta", "cyan", "blue")


@triggers_app.command("replay")
@with_policy_flags
def replay_command(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help='JSONL, one SRM step per line: {"text": str, "token_logprobs": [float, ...]} (and, for '
            'likelihood, "lrm_token_logprobs": [float, ...]); "-" is stdin.'
        ),
    ],
    table: Annotated[bool, typer.Option("--table", help="A readable table instead of JSON lines.")] = False,
    policy: policy_option(  # type: ignore[valid-type]
        only=lambda p: p.replayable, help="a policy that decides from the recorded SRM step"
    ) = "trigreason",
    seed: Annotated[
        int, typer.Option(min=0, help="the session's seed (the random baseline draws from it)")
    ] = 0,
) -> None:
    """Print each step's r_s, hesitation and verdict under a policy: why a trigger fired.

    The policy's parameters are its flags (see `trigreason policies`)."""
    try:
        chosen, own = cli_policies().resolve(
            cli_policies().session_params({**policy_flag_values(ctx), "seed": seed}, policy=policy)
        )
    except PolicyError as exc:
        raise typer.BadParameter(exc.message) from exc
    try:
        lines = sys.stdin.readlines() if str(file) == "-" else file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
    try:
        rows = list(replay(read_steps(lines, source=str(file)), policy=chosen, params=own, seed=seed))
    except ReplayError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not table:
        write_jsonl(rows, sys.stdout)
        return
    title = " ".join(f"{k}={v}" for k, v in msgspec.to_builtins(own).items() if not isinstance(v, list))
    t = Table(title=f"{chosen.name} {title}".strip())
    scored = any(r.score_stat is not None for r in rows)
    for col in ("step", "tokens", "r_s", "hesitates", "run", *(("LRM stat",) if scored else ()), "verdict"):
        t.add_column(col, justify="right" if col not in ("verdict",) else "left")
    style = {"accept": "green"}
    for r in rows:
        colour = style.setdefault(r.verdict, _PALETTE[(len(style) - 1) % len(_PALETTE)])
        t.add_row(
            str(r.index),
            str(r.tokens),
            f"{r.r_s:.3f}",
            "yes" if r.hesitation else "",
            str(r.hesitation_run),
            *(("" if r.score_stat is None else f"{r.score_stat:.3f}",) if scored else ()),
            f"[{colour}]{r.verdict}[/]",
        )
    Console().print(t)


def main() -> None:
    app()


# Commands defined in their own modules register themselves on these groups when imported.
from . import _calibrate, _eval, _models, _policies, _serve_services, _serve_sim, _serve_tgi, _solve, _wan  # noqa: E402, F401
