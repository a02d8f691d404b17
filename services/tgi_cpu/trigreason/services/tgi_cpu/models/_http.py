"""Blocking HTTP on urllib: small JSON pages, and downloads streamed to a file while hashing.

urllib keeps this dependency-free and synchronous (a pull is one long sequential stream); it honours the
usual proxy variables. Connection errors, timeouts, truncated bodies, 429 and 5xx are retried with jittered
backoff; other HTTP errors go to the caller as ``HTTPError``.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import IO, Any

from ._errors import ModelError

__all__ = ["HTTPError", "Transfer", "download", "get_json_bytes", "open_stream"]

HTTPError = urllib.error.HTTPError

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_ATTEMPTS = 4
_BACKOFF_S = 0.5

_USER_AGENT = "trigreason-models/0.1 (+urllib)"


class _Transient(Exception):
    """A failure worth another attempt."""


class _StripAuthOnHostChange(urllib.request.HTTPRedirectHandler):
    # The hub redirects downloads to a CDN with a signed URL: the bearer token must not follow it there.
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if (
            new is not None
            and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc
        ):
            new.remove_header("Authorization")
        return new


def _open(url: str, headers: Mapping[str, str]) -> Any:
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **headers})
    opener = urllib.request.build_opener(_StripAuthOnHostChange())
    try:
        return opener.open(req, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            exc.close()
            raise _Transient(f"HTTP {exc.code} from {url}") from exc
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Transient(f"{url}: {getattr(exc, 'reason', exc)}") from exc


def _retrying(what: str, attempt: Callable[[], Any]) -> Any:
    for i in range(_ATTEMPTS):
        try:
            return attempt()
        except _Transient as exc:
            if i == _ATTEMPTS - 1:
                raise ModelError(
                    f"{what} failed after {_ATTEMPTS} attempts: {exc}",
                    code="model_download_failed",
                    retryable=True,
                ) from exc
            time.sleep(_BACKOFF_S * 2**i * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def get_json_bytes(url: str, *, accept: str) -> tuple[bytes, str, str]:
    """The body, content type and final URL (after redirects) of a small page."""

    def attempt() -> tuple[bytes, str, str]:
        with _open(url, {"Accept": accept}) as resp:
            try:
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(f"{url}: {exc}") from exc
            return body, resp.headers.get("Content-Type", ""), resp.geturl()

    result: tuple[bytes, str, str] = _retrying(f"GET {url}", attempt)
    return result


def open_stream(url: str, headers: Mapping[str, str]) -> tuple[Any, int | None]:
    """Open a download; the caller streams it with :func:`download`. Returns the response and its length."""
    resp = _retrying(f"GET {url}", lambda: _open(url, headers))
    length = resp.headers.get("Content-Length")
    return resp, int(length) if length and length.isdigit() else None


class Transfer:
    """Result of a download: sha256 hex digest and byte count."""

    __slots__ = ("sha256", "size")

    def __init__(self, sha256: str, size: int) -> None:
        self.sha256 = sha256
        self.size = size


def download(
    url: str,
    out: IO[bytes],
    *,
    headers: Mapping[str, str] | None = None,
    on_bytes: Callable[[int], None] = lambda n: None,
    first_response: Any = None,
) -> Transfer:
    """Stream ``url`` into ``out`` (truncated first on each attempt), hashing as it goes.

    ``on_bytes`` sees every chunk's length, and a negative count when an attempt is rolled back.
    ``first_response`` is an already opened response to use for the first attempt.
    """
    hdrs = dict(headers or {})
    pending = [first_response] if first_response is not None else []

    def attempt() -> Transfer:
        resp = pending.pop() if pending else _open(url, hdrs)
        out.seek(0)
        out.truncate()
        digest, n = hashlib.sha256(), 0
        with resp:
            length = resp.headers.get("Content-Length")
            try:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Transient(f"{url}: {exc}") from exc
                    if not chunk:
                        break
                    out.write(chunk)  # a full disk surfaces as OSError here, not as a transient error
                    digest.update(chunk)
                    n += len(chunk)
                    on_bytes(len(chunk))
                if length and length.isdigit() and int(length) != n:
                    raise _Transient(f"{url}: got {n} of {length} bytes")
            except _Transient:
                on_bytes(-n)
                raise
        return Transfer(digest.hexdigest(), n)

    result: Transfer = _retrying(f"download of {url}", attempt)
    return result
