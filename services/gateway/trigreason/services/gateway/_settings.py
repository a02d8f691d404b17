"""The gateway's settings: from the environment, with a profile's default parameters."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from trigreason.proto import ConfigError, SessionParams
from trigreason.services.runtime import env_settings

__all__ = ["GatewaySettings", "profile_file"]


class GatewaySettings(msgspec.Struct, kw_only=True, frozen=True):
    api_tokens: tuple[str, ...] = ()  # empty: no auth
    session_timeout_s: float = 3600.0  # how long a chat completion (streaming or not) waits for the end
    # Parameters a request does not set come from here first (a profile), then SessionParams' defaults.
    default_params: dict[str, Any] = {}
    # A comment line on an idle event stream this often, so proxies and clients keep it open.
    sse_keepalive_s: float = 15.0
    # Long-lived requests open at once (SSE event streams and chat completions); beyond: 429.
    max_streams: int = 256
    # The profile's name (TRIGREASON_PROFILE without folder and .json): a model id of GET /v1/models.
    profile: str = ""
    # The session browser: a link to each session's trace where set, "{trace_id}" in it replaced (for
    # example Jaeger's "http://jaeger:16686/trace/{trace_id}"); how many recent sessions it lists.
    trace_url_template: str = ""
    browser_sessions: int = 100
    # The ``site`` label on the gateway's metrics (TRIGREASON_SITE, as every service reads it).
    site: str = "default"

    def __post_init__(self) -> None:
        if not self.sse_keepalive_s > 0:
            raise ValueError("sse_keepalive_s must be > 0")
        if self.max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        if self.browser_sessions < 1:
            raise ValueError("browser_sessions must be >= 1")
        if not self.session_timeout_s > 0:
            raise ValueError("session_timeout_s must be > 0")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", self.site):
            raise ValueError(f"site {self.site!r}: letters, digits, '-' and '_' (1-63)")

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        load_profile: Callable[[str], dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> GatewaySettings:
        """``TRIGREASON_API_TOKENS``, ``_SESSION_TIMEOUT_S``, ``_SSE_KEEPALIVE_S``, ``_MAX_STREAMS``,
        ``_TRACE_URL_TEMPLATE``, ``_BROWSER_SESSIONS``, ``_SITE``, and the
        default parameters of ``TRIGREASON_PROFILE``: a profile file, or a name where ``load_profile`` (the
        user-facing package's profile lookup) is given."""
        profile = env.get("TRIGREASON_PROFILE")
        params = (load_profile or profile_file)(profile) if profile else {}
        return env_settings(
            cls,
            env,
            prefix="TRIGREASON_",
            skip=frozenset({"default_params", "profile"}),
            overrides={
                "default_params": params,
                "profile": _profile_id(profile) if profile else None,
                **overrides,
            },
        )


def _profile_id(ref: str) -> str:
    name = os.path.basename(ref.rstrip("/\\"))
    return name.removesuffix(".json") or ref


def profile_file(path: str) -> dict[str, Any]:
    """The parameters of the profile file at ``path`` (``{"params": {...}}``), checked as SessionParams."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"no profile file {path!r}: the gateway alone reads profile files, the trigreason package also "
            "profile names"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"profile {path}: not a readable profile file ({exc})") from exc
    params = doc.get("params") if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        raise ConfigError(f"profile {path}: needs a 'params' object")
    try:
        msgspec.convert(params, SessionParams)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"profile {path}: {exc}") from exc
    return params
