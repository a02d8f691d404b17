"""``--model NAME|PATH|hf://...`` to a local GGUF file."""

from __future__ import annotations

import importlib
from pathlib import Path

from trigreason.core import ConfigError

__all__ = ["resolve_model_path"]


def resolve_model_path(ref: str) -> Path:
    """An existing file is used as is; anything else (tiny, srm, lrm, hf://REPO/FILE) goes through
    ``trigreason.models.resolve_model``, which may download and verify it first."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    try:
        # Looked up at run time: the models package is optional here and may not be installed yet.
        models = importlib.import_module("trigreason.models")
    except ImportError:
        models = None
    resolve = getattr(models, "resolve_model", None)
    if resolve is None:
        raise ConfigError(f"model {ref!r}: no such file (model names and hf:// need trigreason.models)")
    return Path(resolve(ref))
