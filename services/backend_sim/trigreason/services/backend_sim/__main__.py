"""``python -m trigreason.services.backend_sim``: the load simulator speaking TGI's protocol, configured from
the environment (``TRIGREASON_SIM_<SETTING>``, e.g. ``TRIGREASON_SIM_PORT``, ``TRIGREASON_SIM_STEP_TOKENS``;
``TRIGREASON_LOG_LEVEL``). Its image's entry point. Benchmarks of the bus only: its text is not a model's.

A bad setting or a port that is taken is one line on stderr and exit status 2; SIGTERM and SIGINT stop it
within a few seconds."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping

from trigreason.proto import ConfigError, TrigReasonError
from trigreason.services.runtime import start_server

from ._server import make_app
from ._settings import SimSettings

__all__ = ["main"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# After a stop, open requests (a stream mid-generation) get this long before the process exits anyway.
_CLOSE_S = 3.0
_log = logging.getLogger("trigreason.backend_sim")


def main(env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    level = env.get("TRIGREASON_LOG_LEVEL", "INFO").upper()
    if level not in _LEVELS:
        print(f"error: TRIGREASON_LOG_LEVEL={level!r}: use {', '.join(_LEVELS)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        settings = SimSettings.from_env(env)
        asyncio.run(_serve(settings))
    except TrigReasonError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


async def _serve(settings: SimSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        runner, url = await start_server(make_app(settings), host=settings.host, port=settings.port)
    except OSError as exc:  # e.g. the port is taken
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
    _log.info(
        "backend simulator listening on %s (time_per_token_ms=%s step_tokens=%s concurrency=%s error_rate=%s "
        "seed=%s)",
        url,
        settings.time_per_token_ms,
        settings.step_tokens,
        settings.concurrency,
        settings.error_rate,
        settings.seed,
    )
    try:
        await stop.wait()
    finally:
        _log.info("shutting down")
        try:
            await asyncio.wait_for(runner.cleanup(), _CLOSE_S)
        except TimeoutError:
            _log.warning("open requests still running after %s s: closing anyway", _CLOSE_S)


if __name__ == "__main__":
    sys.exit(main())
