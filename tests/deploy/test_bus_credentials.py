"""NATS credentials and the inbox prefix in BusSettings (from the environment, as deployments set them)."""

from __future__ import annotations

import pytest

from trigreason.proto import ConfigError
from trigreason.services.runtime import BusSettings


def test_no_credentials_by_default() -> None:
    settings = BusSettings.from_env({})
    assert settings.connect_options() == {"inbox_prefix": "_INBOX"}


def test_user_and_password_and_inbox_prefix() -> None:
    settings = BusSettings.from_env(
        {
            "TRIGREASON_NATS_USER": "srm-worker",
            "TRIGREASON_NATS_PASSWORD": "s3cret",
            "TRIGREASON_NATS_INBOX_PREFIX": "_INBOX.srm-worker",
        }
    )
    assert settings.connect_options() == {
        "user": "srm-worker",
        "password": "s3cret",
        "inbox_prefix": "_INBOX.srm-worker",
    }
    assert "s3cret" not in repr(settings)  # secrets stay out of logs


def test_token_and_creds_file() -> None:
    token = BusSettings.from_env({"TRIGREASON_NATS_TOKEN": "tok"})
    assert token.connect_options() == {"token": "tok", "inbox_prefix": "_INBOX"}
    assert "tok" not in repr(token)
    creds = BusSettings.from_env({"TRIGREASON_NATS_CREDS": "/var/run/nats/user.creds"})
    assert creds.connect_options()["user_credentials"] == "/var/run/nats/user.creds"


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"TRIGREASON_NATS_USER": "gateway"}, "go together"),
        ({"TRIGREASON_NATS_PASSWORD": "x"}, "go together"),
        (
            {"TRIGREASON_NATS_TOKEN": "t", "TRIGREASON_NATS_USER": "u", "TRIGREASON_NATS_PASSWORD": "p"},
            "not both",
        ),
        ({"TRIGREASON_NATS_INBOX_PREFIX": "_INBOX.>"}, "no wildcards"),
        ({"TRIGREASON_NATS_INBOX_PREFIX": "_INBOX.*"}, "no wildcards"),
        ({"TRIGREASON_NATS_INBOX_PREFIX": "a..b"}, "no wildcards"),
    ],
)
def test_bad_credentials_are_config_errors(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BusSettings.from_env(env)
