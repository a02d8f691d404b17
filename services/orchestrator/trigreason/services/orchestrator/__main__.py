"""``python -m trigreason.services.orchestrator``: the session-orchestrator, configured from the
environment (``TRIGREASON_*``: docs/cluster.md). Its image's entry point."""

import sys

from trigreason.services.runtime import BusSettings, HostSettings, service_main

from ._serve import serve

sys.exit(
    service_main(
        "orchestrator",
        lambda env, stop, provider: serve(
            bus=BusSettings.from_env(env),
            host=HostSettings.from_env(env),
            stop=stop,
            tracer_provider=provider,
        ),
    )
)
