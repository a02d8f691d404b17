"""The model cache: where files live, the verified-sidecar fast path, locking and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import platformdirs

from ._errors import ModelError

__all__ = [
    "atomic_file",
    "check_free_space",
    "file_sha256",
    "locked",
    "model_cache_dir",
    "read_sidecar_ok",
    "remove_stale",
    "temp_dir",
    "write_sidecar",
]

_SIDECAR = ".verified.json"
_TMP = ".tmp"


def model_cache_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else ``$TRIGREASON_MODEL_DIR``, else ``<user cache dir>/trigreason/models``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("TRIGREASON_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("trigreason")) / "models"


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}{_SIDECAR}")


def read_sidecar_ok(path: Path, *, sha256: str | None = None, size: int | None = None) -> str | None:
    """The recorded sha256 when ``path`` is exactly the file that was verified (same size and mtime, and
    the expected hash/size when given), so a second pull need not hash a gigabyte again; else None."""
    try:
        st = path.stat()
        rec = json.loads(_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict):
        return None
    recorded = rec.get("sha256")
    ok = (
        isinstance(recorded, str)
        and rec.get("size") == st.st_size
        and rec.get("mtime_ns") == st.st_mtime_ns
        and (sha256 is None or recorded == sha256)
        and (size is None or st.st_size == size)
    )
    return recorded if ok else None


def write_sidecar(path: Path, sha256: str) -> None:
    st = path.stat()
    body = json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    with atomic_file(_sidecar(path)) as out:
        out.write(body.encode())


def file_sha256(path: Path, on_bytes: Callable[[int], None] = lambda n: None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            on_bytes(len(chunk))
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A temp file beside ``path`` that replaces it only if the block finishes; removed on any error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model cache is ordinary readable data
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_stale(directory: Path, name: str) -> None:
    """Leftovers of a pull of ``name`` that was killed (temp files, unpacked wheels); call under the lock."""
    for p in directory.glob(f".{name}.*{_TMP}"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()


def temp_dir(directory: Path, name: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(dir=directory, prefix=f".{name}.wheels.", suffix=_TMP)


@contextlib.contextmanager
def locked(path: Path, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """An exclusive lock beside ``path``, so concurrent pulls of one model download it once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, atomic renames still keep the file whole
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_free_space(directory: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ModelError(
            f"{what} needs {_mb(needed)} free in {directory}, only {_mb(free)} left "
            "(set TRIGREASON_MODEL_DIR to a roomier place)",
            code="model_disk_full",
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
