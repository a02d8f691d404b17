"""Several backend simulators in one process (the benchmarks' inference servers).

    python bench/_simhost.py '[{"time_per_token_ms": 5, "step_tokens": "fixed:9", "concurrency": 1}, ...]'

Starts one TGI-protocol simulator per settings object on a free loopback port, prints their base URLs as
one JSON list on stdout, and serves until SIGTERM. One process for all of them keeps the process count
down on a small machine; each server keeps its own generation slots (``concurrency``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from trigreason.services.backend_sim import SimSettings, StepLength, make_app, start_server
from trigreason.services.runtime import run_event_loop


def settings_from(raw: dict[str, Any]) -> SimSettings:
    values = dict(raw)
    if isinstance(values.get("step_tokens"), str):
        values["step_tokens"] = StepLength.parse(values["step_tokens"])
    return SimSettings(**{**values, "port": 0})


async def main(specs: list[dict[str, Any]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runners = []
    urls = []
    for spec in specs:
        runner, url = await start_server(make_app(settings_from(spec)), host="127.0.0.1", port=0)
        runners.append(runner)
        urls.append(url)
    print(json.dumps(urls), flush=True)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    run_event_loop(lambda: main(spec), env=os.environ)
