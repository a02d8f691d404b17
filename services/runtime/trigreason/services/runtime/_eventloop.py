"""Run a service's main coroutine on the fastest event loop available.

uvloop (libuv) trims the per-message cost of a hop on the bus a little; ``TRIGREASON_EVENT_LOOP=asyncio``
keeps the standard loop (for debugging; ``bench/bench_hop.py`` measures both side by side).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal, TypeVar

from trigreason.proto import ConfigError

__all__ = ["EventLoopKind", "event_loop_kind", "run"]

T = TypeVar("T")
EventLoopKind = Literal["uvloop", "asyncio"]


def event_loop_kind(env: Mapping[str, str]) -> EventLoopKind:
    """``TRIGREASON_EVENT_LOOP``: ``auto`` (uvloop where installed, the default), ``uvloop``, ``asyncio``."""
    wanted = env.get("TRIGREASON_EVENT_LOOP", "auto").strip().lower() or "auto"
    if wanted not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(f"TRIGREASON_EVENT_LOOP={wanted!r}: use auto, uvloop or asyncio")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        if wanted == "uvloop":
            raise ConfigError("TRIGREASON_EVENT_LOOP=uvloop but uvloop is not installed") from exc
        return "asyncio"
    return "uvloop"


def run(main: Callable[[], Coroutine[Any, Any, T]], *, env: Mapping[str, str]) -> T:
    """``asyncio.run(main())`` on the loop ``env`` asks for."""
    if event_loop_kind(env) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())
