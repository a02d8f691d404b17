"""``trigreason serve backend-sim``: a TGI-protocol load simulator, for benchmarks of the bus only. It runs
the simulator's own entry point (``trigreason.services.backend_sim.main``, what its image runs)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ._app import serve_app

__all__: list[str] = []


@serve_app.command("backend-sim")
def serve_backend_sim(
    port: Annotated[int | None, typer.Option(help="(default 8090; env TRIGREASON_SIM_PORT)")] = None,
    host: Annotated[str | None, typer.Option(help="(default 127.0.0.1)")] = None,
    time_per_token_ms: Annotated[
        float | None, typer.Option(min=0.0, help="Decode time per token (default 20)")
    ] = None,
    prefill_ms: Annotated[
        float | None, typer.Option(min=0.0, help="Prefill time per request (default 5)")
    ] = None,
    prefill_ms_per_token: Annotated[
        float | None, typer.Option(min=0.0, help="Prefill time per prompt token (default 0)")
    ] = None,
    step_tokens: Annotated[
        str | None,
        typer.Option(help="Tokens per step: N, uniform:A..B or normal:MEAN,SD (default uniform:20..60)"),
    ] = None,
    confident_p: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Share of confident tokens, logprob -U(0, width) (default 0.85)"),
    ] = None,
    confident_width: Annotated[float | None, typer.Option(min=0.0, help="(default 0.02)")] = None,
    uncertain_rate: Annotated[
        float | None, typer.Option(help="Other tokens' logprob is -Exp(rate) (default 1.0)")
    ] = None,
    hesitation_p: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Chance a step starts with a hesitation word (default 0.1)"),
    ] = None,
    answer_after: Annotated[
        int | None, typer.Option(min=0, help="Steps in the prompt before a final answer may come (default 8)")
    ] = None,
    answer_p: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Chance a later step ends in \\boxed{N} + EOS (default 0.25)"),
    ] = None,
    error_rate: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Share of requests answered 500 (default 0)")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Generations at a time; more wait (default 1)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same outputs (default 0)")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR (env TRIGREASON_LOG_LEVEL)")
    ] = None,
) -> None:
    """Simulate a TGI server (/generate, /generate_stream, /info, /health, /metrics) with configurable
    latency, step lengths, log-probabilities and errors. Its text is not a model's: benchmarks only.
    Every option can also be set as TRIGREASON_SIM_<OPTION> (e.g. TRIGREASON_SIM_STEP_TOKENS)."""
    from trigreason.services import backend_sim

    env = dict(os.environ)
    if log_level is not None:
        env["TRIGREASON_LOG_LEVEL"] = log_level
    flags = {
        "port": port,
        "host": host,
        "time_per_token_ms": time_per_token_ms,
        "prefill_ms": prefill_ms,
        "prefill_ms_per_token": prefill_ms_per_token,
        "step_tokens": step_tokens,
        "confident_p": confident_p,
        "confident_width": confident_width,
        "uncertain_rate": uncertain_rate,
        "hesitation_p": hesitation_p,
        "answer_after": answer_after,
        "answer_p": answer_p,
        "error_rate": error_rate,
        "concurrency": concurrency,
        "seed": seed,
    }
    # The image's entry point, the flags over the environment.
    code = backend_sim.main(env, **{k: v for k, v in flags.items() if v is not None})
    if code:
        raise typer.Exit(code)
