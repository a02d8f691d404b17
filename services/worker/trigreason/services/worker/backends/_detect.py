"""Which protocol a server speaks: TGI (``GET /info``) or the OpenAI API (``GET /v1/models``)."""

from __future__ import annotations

from typing import Literal

from trigreason.proto import BackendError

from ._http import BackendSettings, HttpClient

__all__ = ["detect_protocol"]


async def detect_protocol(url: str, *, settings: BackendSettings | None = None) -> Literal["tgi", "openai"]:
    """``tgi`` if ``GET /info`` names a model (TGI, tgi-cpu, backend-sim), else ``openai`` if
    ``GET /v1/models`` answers. Raises ``BackendError`` (retryable when the server could not be reached)."""
    settings = settings or BackendSettings()
    base = url.rstrip("/")
    if base.endswith("/v1"):
        return "openai"
    # One short attempt per probe: a server that is down is the caller's retry, not ours.
    http = HttpClient(base, settings, name=f"probe:{base}")
    try:
        unreachable: BackendError | None = None
        for path, protocol in (("/info", "tgi"), ("/v1/models", "openai")):
            try:
                reply = await http.request("GET", path, timeout_s=settings.probe_timeout_s, max_attempts=1)
            except BackendError as exc:
                if exc.code == "backend_tls":
                    raise  # an untrusted certificate: the other path would not help, nor would a retry
                if exc.retryable and exc.code != "backend_server_error":
                    unreachable = exc
                    break  # refused or timed out: asking the other path would not help
                continue
            try:
                body = reply.json()
            except BackendError:
                continue  # not JSON: some other web server
            if protocol == "tgi" and isinstance(body, dict) and "model_id" in body:
                return "tgi"
            if protocol == "openai" and isinstance(body, dict) and isinstance(body.get("data"), list):
                return "openai"
    finally:
        await http.aclose()
    if unreachable is not None:
        raise BackendError(
            f"cannot detect the protocol of {base}: {unreachable.message}",
            code=unreachable.code,
            retryable=True,
        )
    raise BackendError(
        f"{base} speaks neither TGI (GET /info) nor the OpenAI API (GET /v1/models); "
        "name the protocol explicitly",
        code="backend_unknown_protocol",
        retryable=False,
    )
