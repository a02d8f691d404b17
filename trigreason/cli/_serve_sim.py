"""``trigreason serve backend-sim``: a TGI-protocol load simulator, for benchmarks of the bus only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Annotated

import structlog
import typer

from trigreason.proto import TrigReasonError
from trigreason.services.runtime import run_event_loop

from ._app import serve_app
from ._shutdown import cleanup_within

__all__: list[str] = []

_SHUTDOWN_S = 1.5  # open requests may go on this long after SIGTERM or SIGINT (cancelled by 2x that)


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
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Simulate a TGI server (/generate, /generate_stream, /info, /health, /metrics) with configurable
    latency, step lengths, log-probabilities and errors. Its text is not a model's: benchmarks only.
    Every option can also be set as TRIGREASON_SIM_<OPTION> (e.g. TRIGREASON_SIM_STEP_TOKENS)."""
    from trigreason.services.backend_sim import SimSettings, make_app, start_server
    from trigreason.services.runtime import configure_logging

    try:
        settings = SimSettings.from_env(
            os.environ,
            port=port,
            host=host,
            time_per_token_ms=time_per_token_ms,
            prefill_ms=prefill_ms,
            prefill_ms_per_token=prefill_ms_per_token,
            step_tokens=step_tokens,
            confident_p=confident_p,
            confident_width=confident_width,
            uncertain_rate=uncertain_rate,
            hesitation_p=hesitation_p,
            answer_after=answer_after,
            answer_p=answer_p,
            error_rate=error_rate,
            concurrency=concurrency,
            seed=seed,
        )
    except TrigReasonError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(service="backend-sim", level=log_level)
    log = structlog.get_logger("trigreason.backend_sim")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        runner, url = await start_server(make_app(settings), host=settings.host, port=settings.port)
        log.info(
            f"backend simulator listening on {url}",
            url=url,
            time_per_token_ms=settings.time_per_token_ms,
            step_tokens=str(settings.step_tokens),
            concurrency=settings.concurrency,
            error_rate=settings.error_rate,
            seed=settings.seed,
        )
        try:
            await stop.wait()
        finally:
            await cleanup_within(runner, _SHUTDOWN_S)

    try:
        run_event_loop(main, env=os.environ)
    except OSError as exc:  # e.g. the port is taken
        typer.echo(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
