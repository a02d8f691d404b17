"""HTTP machinery shared by the TGI and OpenAI-compatible adapters: settings, one pooled aiohttp session
per adapter, per-attempt timeouts, retries with full-jitter backoff, and typed errors."""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import msgspec
import structlog
from multidict import CIMultiDictProxy

from trigreason.proto import BackendError, ConfigError
from trigreason.services.runtime import env_settings

__all__ = ["BackendSettings", "HttpClient", "Reply", "trace_headers"]

_PREFIX = "TRIGREASON_BACKEND_"
_TRACE_HEADERS = ("traceparent", "tracestate")
_log = structlog.get_logger("trigreason.backends")


@dataclass(frozen=True, kw_only=True, slots=True)
class BackendSettings:
    """How an adapter talks to its server; ``from_env`` reads ``TRIGREASON_BACKEND_<FIELD>``."""

    timeout_s: float = 300.0  # per attempt: a long step on a CPU server takes minutes
    connect_timeout_s: float = 5.0
    max_attempts: int = 4  # 1 disables retries
    backoff_base_s: float = 0.2  # full jitter: sleep U(0, min(max, base * 2**retry))
    backoff_max_s: float = 10.0
    retry_after_max_s: float = 30.0  # a server's Retry-After is honoured up to this
    max_connections: int = 64  # pooled per adapter (one replica is one host)
    # An idle pooled connection is kept this long: opening one to a server across a WAN costs a round trip
    # for TCP and one more for TLS, so keep it well past the gaps between steps (aiohttp's default is 15 s).
    keepalive_s: float = 60.0
    probe_timeout_s: float = 5.0  # protocol detection by make_backend(protocol="auto")
    api_key: str | None = field(default=None, repr=False)  # sent as a bearer token
    model: str | None = None  # OpenAI-compatible ``model``; None: the first of GET /v1/models
    # vLLM >= 0.10.2 returns sampled token ids when asked (``return_token_ids``); other servers may
    # reject the unknown field, so it is opt-in.
    openai_token_ids: bool = False
    # Several replicas per role (a URL list or ``dns+http://``): how steps are spread (docs/backends.md).
    routing: Literal["affinity", "round-robin"] = "affinity"
    load_factor: float = 1.25  # bounded load: a replica's in-flight steps < load_factor x the mean
    eject_after: int = 2  # consecutive failed calls that eject a replica
    eject_s: float = 5.0  # the first ejection; doubles while probes keep failing, up to 60 s
    probe_interval_s: float = 2.0  # active health probe of every replica (``GET /health``)
    resolve_interval_s: float = 10.0  # how often a ``dns+http://`` name is resolved again
    # HTTPS to a server across sites (placement 2, docs/deploy.md): the CA bundle that signed the server's
    # certificate (else the system's roots), and a client certificate and key for servers that ask for one.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("timeout_s", "connect_timeout_s", "probe_timeout_s", "keepalive_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("backoff_base_s", "backoff_max_s", "retry_after_max_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_connections < 1:
            raise ConfigError(f"max_connections must be >= 1, got {self.max_connections}")
        if self.routing not in ("affinity", "round-robin"):
            raise ConfigError(f"routing must be affinity or round-robin, got {self.routing!r}")
        if self.load_factor < 1.0:
            raise ConfigError(f"load_factor must be >= 1, got {self.load_factor}")
        if self.eject_after < 1:
            raise ConfigError(f"eject_after must be >= 1, got {self.eject_after}")
        for name in ("eject_s", "probe_interval_s", "resolve_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                raise ConfigError(f"{_PREFIX}{name.upper()}={path}: no such readable file")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                f"{_PREFIX}TLS_CERT and {_PREFIX}TLS_KEY go together (a certificate and its key)"
            )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client's TLS context when any ``tls_*`` is set (None: aiohttp's default for https URLs)."""
        if self.tls_ca is None and self.tls_cert is None:
            return None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{_PREFIX}TLS_CA={self.tls_ca}: not a PEM CA bundle ({exc})") from exc
        if self.tls_cert is not None and self.tls_key is not None:
            try:
                context.load_cert_chain(self.tls_cert, self.tls_key)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"{_PREFIX}TLS_CERT={self.tls_cert} / {_PREFIX}TLS_KEY: not a matching PEM certificate "
                    f"and key ({exc})"
                ) from exc
        return context

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> BackendSettings:
        """Read ``TRIGREASON_BACKEND_<FIELD>`` (e.g. ``TRIGREASON_BACKEND_TIMEOUT_S``); overrides that are
        None leave the value from the environment."""
        return env_settings(cls, env, prefix=_PREFIX, overrides=overrides)


def trace_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The W3C trace context out of ``headers`` (any case); nothing else is forwarded."""
    if not headers:
        return {}
    lowered = {k.lower(): v for k, v in headers.items()}
    return {k: lowered[k] for k in _TRACE_HEADERS if k in lowered}


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful (2xx) response, read in full."""

    status: int
    body: bytes
    headers: CIMultiDictProxy[str]
    attempts: int
    elapsed_s: float  # first attempt's start to the last byte, retries and backoff included

    def json(self, type_: type[Any] = object) -> Any:
        try:
            return msgspec.json.decode(self.body, type=type_)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BackendError(
                f"unexpected response body: {exc}", code="backend_bad_response", retryable=False
            ) from exc


class _Retryable(Exception):
    def __init__(self, error: BackendError, retry_after_s: float | None = None) -> None:
        self.error = error
        self.retry_after_s = retry_after_s


class HttpClient:
    """One pooled aiohttp session against one server. The session is created on first use, so the
    client may be built outside a running event loop."""

    def __init__(
        self,
        base_url: str,
        settings: BackendSettings,
        *,
        name: str,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.name = name
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = settings.ssl_context() or True  # a bad file fails here, at once
        self._headers = {"User-Agent": "trigreason"}
        if settings.api_key:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.settings.max_connections,
                ttl_dns_cache=300,
                ssl=self._ssl,
                keepalive_timeout=self.settings.keepalive_s,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, raise_for_status=False
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        max_attempts: int | None = None,
    ) -> Reply:
        """Send and read one request, retrying connection errors, timeouts, 5xx and 429.

        Raises ``BackendError``: retryable once attempts are exhausted on a retryable failure, not
        retryable at once on any other 4xx.
        """
        url = self.base_url + path
        attempts = max_attempts or self.settings.max_attempts
        timeout = aiohttp.ClientTimeout(
            total=timeout_s or self.settings.timeout_s,
            sock_connect=min(self.settings.connect_timeout_s, timeout_s or self.settings.timeout_s),
        )
        data = None if json is None else msgspec.json.encode(json)
        send_headers = dict(headers or {})
        if data is not None:
            send_headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        for attempt in range(1, attempts + 1):
            try:
                status, body, resp_headers = await self._once(method, url, data, send_headers, timeout)
                if status < 300:
                    return Reply(status, body, resp_headers, attempt, time.perf_counter() - started)
                self._raise_for_status(method, path, status, body, resp_headers)
            except _Retryable as failure:
                if attempt == attempts:
                    err = failure.error
                    raise BackendError(
                        f"{err.message} (gave up after {attempt} attempt{'s' if attempt > 1 else ''})",
                        code=err.code,
                        retryable=True,
                    ) from failure.error
                delay = self._delay(attempt, failure.retry_after_s)
                _log.warning(
                    "backend call failed, retrying",
                    backend=self.name,
                    path=path,
                    attempt=attempt,
                    code=failure.error.code,
                    error=failure.error.message,
                    delay_s=round(delay, 3),
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _once(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        limits: aiohttp.ClientTimeout,
    ) -> tuple[int, bytes, CIMultiDictProxy[str]]:
        session = self._get_session()
        try:
            async with session.request(method, url, data=data, headers=headers, timeout=limits) as resp:
                return resp.status, await resp.read(), resp.headers
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _Retryable(
                BackendError(
                    f"{self.name}: no response within {limits.total}s from {url}",
                    code="backend_timeout",
                    retryable=True,
                )
            ) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            # Not transient: the server's certificate is not trusted by TRIGREASON_BACKEND_TLS_CA (other TLS
            # errors, such as a handshake cut by a partition, stay retryable below).
            raise BackendError(
                f"{self.name}: {url}'s certificate is not trusted ({exc}); check {_PREFIX}TLS_CA",
                code="backend_tls",
                retryable=False,
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise BackendError(f"{self.name}: invalid URL {url}", code="bad_config", retryable=False) from exc
        except aiohttp.ClientError as exc:  # refused, reset, disconnected, truncated body
            raise _Retryable(
                BackendError(
                    f"{self.name}: cannot reach {url}: {exc.__class__.__name__}: {exc}",
                    code="backend_unavailable",
                    retryable=True,
                )
            ) from exc

    def _raise_for_status(
        self, method: str, path: str, status: int, body: bytes, headers: CIMultiDictProxy[str]
    ) -> None:
        detail = _error_detail(body)
        where = f"{self.name}: {method} {path} -> {status}"
        message = f"{where}: {detail}" if detail else where
        if status == 429:
            raise _Retryable(
                BackendError(message, code="backend_overloaded", retryable=True), _retry_after(headers)
            )
        if status >= 500 or status == 408:
            raise _Retryable(
                BackendError(message, code="backend_server_error", retryable=True), _retry_after(headers)
            )
        # The server's own 4xx: it refused what the request asked (a limit, a parameter); retrying cannot
        # help, and the session fails with a code that says so (a 422 to a chat client, never a 502).
        raise BackendError(
            f"the inference server refused the request: {message}", code="request_refused", retryable=False
        )

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.settings.retry_after_max_s)
        # Full jitter (AWS architecture blog): spreads retries of many workers after a shared failure.
        cap = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, cap)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_detail(body: bytes) -> str:
    """The server's own error message: TGI ``{"error": str}``, OpenAI ``{"error": {"message": str}}``,
    FastAPI ``{"detail": ...}``; else the start of the body."""
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:300].decode("utf-8", errors="replace").strip()
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
        if err is not None:
            return str(err)
        if "detail" in obj:
            return str(obj["detail"])[:300]
        if "message" in obj:
            return str(obj["message"])
    return body[:300].decode("utf-8", errors="replace").strip()
