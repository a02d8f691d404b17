"""``make_backend``: an adapter for a server URL (its protocol given or detected), or a pool of replicas
for a URL list or a ``dns+http://`` name."""

from __future__ import annotations

from typing import Literal

from trigreason.proto import ConfigError

from ._detect import detect_protocol
from ._http import BackendSettings
from ._interface import Backend
from ._openai import OpenAIBackend
from ._pool import ReplicaPool, parse_backend_url
from ._tgi import TgiBackend

__all__ = ["BackendProtocol", "detect_protocol", "make_backend"]

BackendProtocol = Literal["auto", "tgi", "openai"]


def _adapter(
    url: str, protocol: Literal["tgi", "openai"], settings: BackendSettings, name: str | None
) -> Backend:
    if protocol == "tgi":
        return TgiBackend(url, settings=settings, name=name)
    return OpenAIBackend(url, settings=settings, name=name)


async def make_backend(
    url: str,
    *,
    protocol: BackendProtocol = "auto",
    settings: BackendSettings | None = None,
    name: str | None = None,
) -> Backend:
    """An adapter for the inference server at ``url``; ``auto`` asks the server which protocol it speaks.

    ``url`` may also name several replicas: ``http://a:80,http://b:80`` or ``dns+http://name:80`` (every
    address of ``name``, re-resolved). Their steps are routed by session (docs/backends.md). Close the
    backend with ``aclose()``.
    """
    if protocol not in ("auto", "tgi", "openai"):
        raise ConfigError(f"unknown backend protocol {protocol!r} (auto, tgi or openai)")
    settings = settings or BackendSettings()
    source = parse_backend_url(url)
    single = source.single
    if single is not None:
        chosen = protocol if protocol != "auto" else await detect_protocol(single, settings=settings)
        return _adapter(single, chosen, settings, name)
    pool = ReplicaPool(source, protocol=protocol, make_adapter=_adapter, settings=settings, name=name)
    try:
        await pool.start()
    except BaseException:
        await pool.aclose()
        raise
    return pool
