"""``hf://REPO/FILE[@REVISION]`` from the Hugging Face hub (or ``$HF_ENDPOINT``), for users who have it."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from ._errors import ModelError
from ._http import HTTPError, download, open_stream
from ._progress import make_reporter
from ._store import atomic_file, check_free_space, locked, read_sidecar_ok, remove_stale, write_sidecar

__all__ = ["fetch_hf", "parse_hf"]

_PREFIX = "hf://"


def parse_hf(spec: str) -> tuple[str, str, str]:
    """``(repo, file, revision)``; REPO is ``owner/name``, the revision defaults to ``main``."""
    body = spec[len(_PREFIX) :]
    body, at, revision = body.rpartition("@") if "@" in body else (body, "", "main")
    segments = body.split("/")
    if len(segments) < 3 or any(s in ("", ".", "..") for s in segments) or (at and not revision):
        raise ModelError(
            f"{spec!r}: expected hf://OWNER/NAME/FILE or hf://OWNER/NAME/FILE@REVISION",
            code="model_not_found",
        )
    return "/".join(segments[:2]), "/".join(segments[2:]), revision


def fetch_hf(spec: str, cache_dir: Path, progress: bool | None) -> Path:
    repo, file, revision = parse_hf(spec)
    # One directory per revision: ``main`` is fetched once and kept; name a commit to pin, delete to refresh.
    target = cache_dir / "hf" / repo / revision.replace("/", "--") / file
    if read_sidecar_ok(target):
        return target
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    q = urllib.parse.quote
    url = f"{endpoint}/{q(repo)}/resolve/{q(revision, safe='')}/{q(file)}"
    token = os.environ.get("HF_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with make_reporter(file, progress) as rep, locked(target, lambda: rep.note("waiting for another pull")):
        if read_sidecar_ok(target):
            return target
        remove_stale(target.parent, target.name)
        rep.phase(f"downloading {repo}/{file}@{revision}", None)
        try:
            resp, length = open_stream(url, headers)
            try:
                check_free_space(target.parent, length or 0, f"downloading {spec}")
            except BaseException:
                resp.close()
                raise
            rep.phase("downloading", length)
            with atomic_file(target) as out:
                got = download(url, out, headers=headers, on_bytes=rep.advance, first_response=resp)
        except HTTPError as exc:
            exc.close()
            if exc.code in (401, 403):
                hint = "HF_TOKEN is set but was refused" if token else "set HF_TOKEN"
                raise ModelError(
                    f"{spec}: HTTP {exc.code} from {endpoint} ({hint})", code="model_unauthorized"
                ) from exc
            if exc.code == 404:
                raise ModelError(
                    f"{spec}: no such repo, file or revision on {endpoint}", code="model_not_found"
                ) from exc
            raise ModelError(f"{spec}: HTTP {exc.code} {exc.reason}", code="model_download_failed") from exc
        write_sidecar(target, got.sha256)
    return target
