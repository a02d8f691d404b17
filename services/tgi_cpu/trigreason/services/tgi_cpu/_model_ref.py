"""``--model NAME|PATH|hf://...`` to a local GGUF file."""

from __future__ import annotations

from pathlib import Path

from trigreason.services.tgi_cpu.models import resolve_model

__all__ = ["resolve_model_path"]


def resolve_model_path(ref: str) -> Path:
    """An existing file as is; a default model name (tiny, srm, lrm) or ``hf://REPO/FILE`` fetched and
    verified first (``trigreason.services.tgi_cpu.models``; raises its ``ModelError``)."""
    path = Path(ref).expanduser()
    return path if path.is_file() else resolve_model(ref)
