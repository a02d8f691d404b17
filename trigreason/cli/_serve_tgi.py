"""``trigreason serve tgi-cpu``: the TGI-protocol server on llama.cpp, for machines without a GPU."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.console import Console

from trigreason.proto import TrigReasonError
from trigreason.services.runtime import run_event_loop

from ._app import serve_app
from ._shutdown import cleanup_within

__all__: list[str] = []

_SHUTDOWN_S = 1.5  # open requests may go on this long after SIGTERM or SIGINT (cancelled by 2x that)


@serve_app.command("tgi-cpu")
def serve_tgi_cpu(
    model: Annotated[
        str | None,
        typer.Option(help="tiny, srm, lrm, a GGUF file or hf://REPO/FILE (env TRIGREASON_TGI_CPU_MODEL)"),
    ] = None,
    port: Annotated[int | None, typer.Option(help="(default 8081; env TRIGREASON_TGI_CPU_PORT)")] = None,
    host: Annotated[str | None, typer.Option(help="(default 127.0.0.1; env TRIGREASON_TGI_CPU_HOST)")] = None,
    ctx: Annotated[
        int | None,
        typer.Option(min=16, help="Context window in tokens (default 4096; env TRIGREASON_TGI_CPU_CTX)"),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="CPU threads (default all available; env TRIGREASON_TGI_CPU_THREADS)"),
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Requests that may wait; more get 429 (default 16; env TRIGREASON_TGI_CPU_MAX_QUEUE)",
        ),
    ] = None,
    cache_slots: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sessions whose prefixes the K/V cache keeps at once, sharing --ctx "
            "(default 4; env TRIGREASON_TGI_CPU_CACHE_SLOTS)",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Serve one GGUF model over Hugging Face TGI's protocol (/generate, /generate_stream, /info, ...)."""
    # Imported here: the engine needs llama-cpp-python, which other commands do not.
    from trigreason.services.runtime import configure_logging
    from trigreason.services.tgi_cpu import (
        LlamaEngine,
        TgiCpuSettings,
        make_app,
        resolve_model_path,
        start_server,
    )

    configure_logging(service="tgi-cpu", level=log_level)
    log = structlog.get_logger("trigreason.tgi_cpu")
    try:
        settings = TgiCpuSettings.from_env(
            os.environ,
            model=model,
            port=port,
            host=host,
            ctx=ctx,
            threads=threads,
            max_queue=max_queue,
            cache_slots=cache_slots,
        )
        log.info("resolving model", model=settings.model)
        path = resolve_model_path(settings.model)
        model_id = path.name if Path(settings.model).expanduser().is_file() else settings.model
        log.info(
            "loading model", path=str(path), size_mb=round(path.stat().st_size / 2**20, 1), ctx=settings.ctx
        )
        started = time.perf_counter()
        spinner = (
            Console(stderr=True).status(f"loading {path.name} ...")
            if sys.stderr.isatty()
            else contextlib.nullcontext()
        )
        with spinner:
            engine = LlamaEngine(
                path,
                n_ctx=settings.ctx,
                n_threads=settings.threads,
                n_batch=settings.batch,
                prefix_reuse=settings.prefix_reuse,
                cache_slots=settings.cache_slots,
                model_id=model_id,
            )
        log.info(
            "model loaded",
            model_id=engine.model_id,
            seconds=round(time.perf_counter() - started, 2),
            n_vocab=engine.n_vocab,
            n_ctx=engine.n_ctx,
            threads=engine.n_threads,
            cache_slots=engine.cache_slots,
        )
    except TrigReasonError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    except ValueError as exc:  # llama.cpp could not load the file
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        runner, url = await start_server(make_app(engine, settings), host=settings.host, port=settings.port)
        log.info(f"listening on {url}", url=url, max_queue=settings.max_queue)
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            # A generation in flight is cancelled (at its next token) after a moment, not run to its end.
            await cleanup_within(runner, _SHUTDOWN_S)

    try:
        run_event_loop(main, env=os.environ)
    except OSError as exc:  # e.g. the port is taken
        typer.echo(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
    finally:
        engine.close()
