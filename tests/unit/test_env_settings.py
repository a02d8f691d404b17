"""The one typed mechanism every service reads its settings with (runtime's ``env_settings``), and that the
settings objects read every field they declare."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import pytest

from trigreason.proto import ConfigError
from trigreason.services.backend_sim import SimSettings, StepLength
from trigreason.services.gateway import GatewaySettings
from trigreason.services.runtime import BusSettings, HostSettings, env_settings, env_variable
from trigreason.services.tgi_cpu import TgiCpuSettings
from trigreason.services.worker.backends import BackendSettings


@dataclass(frozen=True, kw_only=True)
class _Example:
    count: int = 1
    ratio: float = 0.5
    on: bool = False
    name: str | None = None
    mode: Literal["a", "b"] = "a"
    delays: tuple[float, ...] = (1.0,)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, _Example()),
        ({"X_COUNT": "3", "X_RATIO": "0.25"}, _Example(count=3, ratio=0.25)),
        ({"X_ON": "yes"}, _Example(on=True)),
        ({"X_ON": "0"}, _Example(on=False)),
        ({"X_NAME": "n", "X_MODE": "b"}, _Example(name="n", mode="b")),
        ({"X_DELAYS": "1, 2.5,4"}, _Example(delays=(1.0, 2.5, 4.0))),
        ({"X_COUNT": ""}, _Example()),  # empty: the default
    ],
)
def test_env_settings_converts_by_type(env: dict[str, str], expected: _Example) -> None:
    assert env_settings(_Example, env, prefix="X_") == expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [({"X_COUNT": "many"}, "X_COUNT"), ({"X_ON": "maybe"}, "X_ON"), ({"X_MODE": "c"}, "X_MODE")],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        env_settings(_Example, env, prefix="X_")


def test_overrides_win_none_keeps_the_environment_and_unknown_names_fail() -> None:
    got = env_settings(_Example, {"X_COUNT": "3"}, prefix="X_", overrides={"count": None, "ratio": 0.1})
    assert (got.count, got.ratio) == (3, 0.1)
    with pytest.raises(ConfigError, match="colour"):
        env_settings(_Example, {}, prefix="X_", overrides={"colour": 1})


def _every_field(cls: type, prefix: str, names: dict[str, str] | None = None) -> set[str]:
    return {env_variable(f.name, prefix, names) for f in fields(cls)}


def test_bus_settings_read_every_field_they_declare(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-")
    env = {
        "TRIGREASON_NATS_URL": "nats://a:1",
        "TRIGREASON_NATS_REPLICAS": "3",
        "TRIGREASON_EVENT_MAX_AGE_S": "60",
        "TRIGREASON_EVENT_MAX_BYTES": "1000",
        "TRIGREASON_SESSION_MAX_BYTES": "2000",
        "TRIGREASON_COMMAND_MAX_BYTES": "3000",
        "TRIGREASON_DEAD_LETTER_MAX_AGE_S": "70",
        "TRIGREASON_DEAD_LETTER_MAX_BYTES": "4000",
        "TRIGREASON_MAX_MESSAGE_BYTES": "5000",
        "TRIGREASON_DUPLICATE_WINDOW_S": "30",
        "TRIGREASON_ACK_WAIT_S": "9",
        "TRIGREASON_MAX_DELIVER": "7",
        "TRIGREASON_RETRY_BACKOFF_S": "0.5,1",
        "TRIGREASON_NATS_STORAGE": "memory",
        "TRIGREASON_NATS_USER": "u",
        "TRIGREASON_NATS_PASSWORD": "p",
        "TRIGREASON_NATS_CREDS": "/x.creds",
        "TRIGREASON_NATS_INBOX_PREFIX": "_INBOX.svc",
        "TRIGREASON_NATS_TLS_CA": str(tmp_path / "ca.pem"),
        "TRIGREASON_NATS_TLS_CERT": str(tmp_path / "cert.pem"),
        "TRIGREASON_NATS_TLS_KEY": str(tmp_path / "key.pem"),
        "TRIGREASON_NATS_TLS_HANDSHAKE_FIRST": "true",
        "TRIGREASON_NATS_DOMAIN": "a",
        "TRIGREASON_PLACEMENT": "edge",
        "TRIGREASON_SITE": "a",
        "TRIGREASON_EDGE_SITES": "b",
        "TRIGREASON_SITE_PUBLISH_TIMEOUT_S": "5",
    }
    got = BusSettings.from_env(env)
    default = BusSettings()
    changed = {f.name for f in fields(BusSettings) if getattr(got, f.name) != getattr(default, f.name)}
    # Every declared field is read (the token is the one left out: it excludes user and password).
    assert changed == {f.name for f in fields(BusSettings)} - {"nats_token"}
    assert got.backoff_s == (0.5, 1.0)
    assert BusSettings.from_env({"TRIGREASON_NATS_TOKEN": "t"}).nats_token == "t"
    with pytest.raises(ConfigError, match="go together"):
        BusSettings.from_env({"TRIGREASON_NATS_USER": "u"})
    with pytest.raises(ConfigError, match="TRIGREASON_NATS_STORAGE"):
        BusSettings.from_env({"TRIGREASON_NATS_STORAGE": "tape"})


@pytest.mark.parametrize(
    ("cls", "env", "field", "value"),
    [
        (HostSettings, {"TRIGREASON_DRAIN_S": "1.5"}, "drain_s", 1.5),
        (GatewaySettings, {"TRIGREASON_API_TOKENS": "a,b"}, "api_tokens", ("a", "b")),
        (BackendSettings, {"TRIGREASON_BACKEND_TIMEOUT_S": "2"}, "timeout_s", 2.0),
        (BackendSettings, {"TRIGREASON_BACKEND_OPENAI_TOKEN_IDS": "on"}, "openai_token_ids", True),
        (TgiCpuSettings, {"TRIGREASON_TGI_CPU_THREADS": "2"}, "threads", 2),
        (SimSettings, {"TRIGREASON_SIM_STEP_TOKENS": "fixed:7"}, "step_tokens", StepLength.parse("fixed:7")),
        (SimSettings, {"TRIGREASON_SIM_HESITATION_WORDS": "Wait, Hmm"}, "hesitation_words", ("Wait", "Hmm")),
    ],
)
def test_each_service_reads_its_settings_the_same_way(
    cls: type, env: dict[str, str], field: str, value: object
) -> None:
    assert getattr(cls.from_env(env), field) == value  # type: ignore[attr-defined]
