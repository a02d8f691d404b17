"""``python -m trigreason.services.trigger_evaluator``: the trigger-evaluator, configured from the
environment (``TRIGREASON_*``: docs/cluster.md). Its image's entry point."""

import sys

from trigreason.services.runtime import BusSettings, HostSettings, service_main

from ._serve import serve

sys.exit(
    service_main(
        "trigger-evaluator",
        lambda env, stop, provider: serve(
            bus=BusSettings.from_env(env),
            host=HostSettings.from_env(env),
            stop=stop,
            tracer_provider=provider,
        ),
    )
)
