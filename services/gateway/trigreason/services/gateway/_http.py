"""HTTP plumbing shared by the handlers: JSON answers and errors, and reading what a request says (its
body, bearer token, session id, Last-Event-ID and Idempotency-Key), each checked with a clear 4xx."""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

import msgspec
from aiohttp import web

from ._patterns import IDEMPOTENCY_KEY_PATTERN, LAST_EVENT_ID_PATTERN, SESSION_ID_PATTERN
from ._responses import Error, ErrorDetail

__all__ = [
    "HttpError",
    "bearer",
    "check_token",
    "idempotency_key",
    "json_response",
    "last_event_id",
    "path_session_id",
    "read_json",
]

_SESSION_ID = re.compile(SESSION_ID_PATTERN)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_LAST_EVENT_ID = re.compile(LAST_EVENT_ID_PATTERN)
_MAX_EVENT_ID = 2**63 - 1


class HttpError(web.HTTPException):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        super().__init__(
            headers=headers,
            # json, not msgspec: a message that quotes the request may hold a lone surrogate (escaped).
            text=json.dumps(msgspec.to_builtins(Error(error=ErrorDetail(code=code, message=message)))),
            content_type="application/json",
        )


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), status=status, content_type="application/json")


async def read_json(request: web.Request, kind: type[Any]) -> Any:
    """The JSON body as ``kind``: 415 for another media type, 400 for bad JSON, 422 for the wrong shape."""
    ctype = request.content_type
    if request.headers.get("Content-Type") and not (
        ctype == "application/json"
        or ctype.endswith("+json")
        or ctype == "application/x-www-form-urlencoded"  # curl -d's default; the body is still JSON
    ):
        raise HttpError(415, "unsupported_media_type", f"send application/json, not {ctype}")
    raw = await request.read()
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise HttpError(400, "bad_json", f"request body is not valid JSON: {exc}") from exc
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise HttpError(422, "invalid_request", str(exc)) from exc


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise HttpError(400, "bad_idempotency_key", "Idempotency-Key is 1 to 255 printable ASCII characters")
    return key


def bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def check_token(request: web.Request, tokens: tuple[bytes, ...]) -> None:
    try:
        token = bearer(request).encode()
    except UnicodeEncodeError:
        token = b""
    # compare_digest on bytes: on str it raises for non-ASCII text
    if not token or not any(hmac.compare_digest(token, t) for t in tokens):
        raise HttpError(
            401, "unauthorized", "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )


def path_session_id(request: web.Request) -> str:
    session_id = request.match_info["session_id"]
    if not _SESSION_ID.fullmatch(session_id):
        raise HttpError(400, "bad_session_id", "a session id is 1 to 64 ASCII letters, digits, '-' and '_'")
    return session_id


def last_event_id(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    if not _LAST_EVENT_ID.fullmatch(raw) or int(raw) > _MAX_EVENT_ID:
        raise HttpError(400, "bad_last_event_id", "Last-Event-ID must be an event id from this stream")
    return int(raw)
