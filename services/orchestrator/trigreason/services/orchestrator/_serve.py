"""Run the orchestrator as a service process: ``main`` is its image's entry point
(``python -m trigreason.services.orchestrator``) and what ``trigreason serve orchestrator``
calls."""

from collections.abc import Mapping
from typing import Any

from trigreason.services.runtime import BusSettings, HostSettings, consumer_service, service_main

from ._service import Orchestrator

__all__ = ["main", "serve"]

serve = consumer_service("orchestrator", Orchestrator)


def main(env: Mapping[str, str] | None = None, **host: Any) -> int:
    """The orchestrator process, configured from ``env`` (default: the environment; ``TRIGREASON_*``,
    docs/cluster.md); ``host`` overrides ``HostSettings`` fields (flags). Returns the exit status."""
    return service_main(
        "orchestrator",
        lambda env, stop, provider: serve(
            bus=BusSettings.from_env(env),
            host=HostSettings.from_env(env, **host),
            stop=stop,
            tracer_provider=provider,
        ),
        env=env,
    )
