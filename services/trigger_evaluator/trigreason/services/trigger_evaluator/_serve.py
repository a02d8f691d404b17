"""Run the trigger-evaluator as a service process: ``main`` is its image's entry point
(``python -m trigreason.services.trigger_evaluator``) and what ``trigreason serve trigger-evaluator``
calls."""

from collections.abc import Mapping
from typing import Any

from trigreason.services.runtime import BusSettings, HostSettings, consumer_service, service_main

from ._service import TriggerEvaluator

__all__ = ["main", "serve"]

serve = consumer_service("trigger-evaluator", TriggerEvaluator)


def main(env: Mapping[str, str] | None = None, **host: Any) -> int:
    """The trigger-evaluator process, configured from ``env`` (default: the environment; ``TRIGREASON_*``,
    docs/cluster.md); ``host`` overrides ``HostSettings`` fields (flags). Returns the exit status."""
    return service_main(
        "trigger-evaluator",
        lambda env, stop, provider: serve(
            bus=BusSettings.from_env(env),
            host=HostSettings.from_env(env, **host),
            stop=stop,
            tracer_provider=provider,
        ),
        env=env,
    )
