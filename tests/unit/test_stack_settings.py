"""The embedded stack's service settings: the environment read as ``trigreason serve`` reads it, with what
the stack decides itself on top (tests/services/test_up_lifecycle.py checks the same through ``up``)."""

from __future__ import annotations

import pytest

from trigreason.host import ServiceSettings
from trigreason.proto import ConfigError
from trigreason.stack import StackSpec, service_settings


def test_the_gateway_and_the_bus_read_the_environment_as_serve_does() -> None:
    env = {
        "TRIGREASON_API_TOKENS": "a, b",
        "TRIGREASON_SESSION_TIMEOUT_S": "12",
        "TRIGREASON_ACK_WAIT_S": "7",
        "TRIGREASON_CONCURRENCY": "3",
        "TRIGREASON_PORT": "9999",
    }
    got = service_settings(StackSpec(gateway_port=1234), env, nats_url="nats://x:1", local_nats=False)
    served = ServiceSettings.from_env(env)
    assert got.gateway == served.gateway
    assert got.gateway.api_tokens == ("a", "b")
    assert got.bus.ack_wait_s == 7.0
    assert got.bus.nats_url == "nats://x:1"
    assert got.bus.storage == "file"
    assert got.host.concurrency == 3
    assert got.host.port == 1234  # the flag wins


def test_what_the_stack_decides_itself() -> None:
    env = {"TRIGREASON_METRICS_PORT": "9100"}
    got = service_settings(StackSpec(concurrency=5), env, nats_url="nats://x:1", local_nats=True)
    assert got.bus.storage == "memory"  # its own nats-server's store goes away with it
    assert got.host.metrics_port == 0  # four services cannot share one probe port
    assert got.host.concurrency == 5
    assert got.host.drain_s == 2.0
    explicit = {"TRIGREASON_NATS_STORAGE": "file", "TRIGREASON_DRAIN_S": "0.5"}
    got = service_settings(StackSpec(), explicit, nats_url="nats://x:1", local_nats=True)
    assert got.bus.storage == "file"
    assert got.host.drain_s == 0.5


@pytest.mark.parametrize("raw", ["-1", "nan", "inf", "soon"])
def test_a_bad_drain_time_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError):
        ServiceSettings.from_env({"TRIGREASON_DRAIN_S": raw})
