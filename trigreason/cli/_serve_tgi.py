"""``trigreason serve tgi-cpu``: the TGI-protocol server on llama.cpp, for machines without a GPU. It runs
the server's own entry point (``trigreason.services.tgi_cpu.main``, what its image runs)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ._app import serve_app

__all__: list[str] = []


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
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR (env TRIGREASON_LOG_LEVEL)")
    ] = None,
) -> None:
    """Serve one GGUF model over Hugging Face TGI's protocol (/generate, /generate_stream, /info, ...)."""
    # Imported here: the engine needs llama-cpp-python, which other commands do not.
    from trigreason.services import tgi_cpu

    env = dict(os.environ)
    if log_level is not None:
        env["TRIGREASON_LOG_LEVEL"] = log_level
    flags = {"model": model, "port": port, "host": host, "ctx": ctx, "threads": threads,
             "max_queue": max_queue, "cache_slots": cache_slots}  # fmt: skip
    # The image's entry point, the flags over the environment.
    code = tgi_cpu.main(env, **{k: v for k, v in flags.items() if v is not None})
    if code:
        raise typer.Exit(code)
