"""``python -m trigreason.services.gateway``: the HTTP gateway, configured from the environment
(``TRIGREASON_*``: docs/cluster.md; ``TRIGREASON_PROFILE`` is a profile file here). Its image's entry
point."""

import sys

from trigreason.services.runtime import BusSettings, HostSettings, service_main

from ._serve import serve
from ._settings import GatewaySettings

sys.exit(
    service_main(
        "gateway",
        lambda env, stop, provider: serve(
            GatewaySettings.from_env(env),
            bus=BusSettings.from_env(env),
            host=HostSettings.from_env(env),
            stop=stop,
            tracer_provider=provider,
        ),
    )
)
