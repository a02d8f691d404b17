"""The patterns and bounds the gateway checks its inputs against, shared by the checks and the OpenAPI
document."""

from __future__ import annotations

from trigreason.proto import MAX_QUESTION_CHARS

__all__ = [
    "IDEMPOTENCY_KEY_PATTERN",
    "LAST_EVENT_ID_PATTERN",
    "MAX_QUESTION_CHARS",
    "NOT_BLANK_PATTERN",
    "SESSION_ID_PATTERN",
    "SESSION_LIST_MAX",
    "STATIC_FILES",
]

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"  # printable ASCII, no spaces
LAST_EVENT_ID_PATTERN = r"^[0-9]{1,19}$"
# At least one character that is not (ASCII) white space; spelled out, as \\S differs between regex engines.
NOT_BLANK_PATTERN = r"[^\t\n\v\f\r ]"
SESSION_LIST_MAX = 200  # GET /v1/sessions?limit=
# The session browser's files (GET /static/{name}) and their media types.
STATIC_FILES = {
    "browser.css": "text/css",
    "common.js": "text/javascript",
    "index.js": "text/javascript",
    "session.js": "text/javascript",
}
