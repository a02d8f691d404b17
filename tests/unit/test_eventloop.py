"""Which event loop a service runs on, chosen from the environment passed in."""

from __future__ import annotations

import asyncio

import pytest

from trigreason.proto import ConfigError
from trigreason.services.runtime import event_loop_kind, run_event_loop


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "uvloop"),  # uvloop is a dependency on this platform: auto picks it
        ({"TRIGREASON_EVENT_LOOP": "auto"}, "uvloop"),
        ({"TRIGREASON_EVENT_LOOP": ""}, "uvloop"),
        ({"TRIGREASON_EVENT_LOOP": "uvloop"}, "uvloop"),
        ({"TRIGREASON_EVENT_LOOP": "asyncio"}, "asyncio"),
        ({"TRIGREASON_EVENT_LOOP": " AsyncIO "}, "asyncio"),
    ],
)
def test_event_loop_kind(env: dict[str, str], expected: str) -> None:
    assert event_loop_kind(env) == expected


def test_unknown_event_loop_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="TRIGREASON_EVENT_LOOP='trio'"):
        event_loop_kind({"TRIGREASON_EVENT_LOOP": "trio"})


@pytest.mark.parametrize(("kind", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_run_uses_the_chosen_loop(kind: str, module: str) -> None:
    async def main() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert run_event_loop(main, env={"TRIGREASON_EVENT_LOOP": kind}).startswith(module)
