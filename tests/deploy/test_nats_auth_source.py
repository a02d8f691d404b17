"""One source for the NATS authorization (tests/deploy/nats_auth.py): the compose stack's auth.conf and
the chart's NATS values are both generated from it, and from the code's own layout."""

from __future__ import annotations

import yaml

from tests.deploy.nats_auth import (
    AUTH_CONF,
    CONSUMES,
    VALUES,
    auth_conf,
    authorization,
    nats_values,
    values_yaml,
)
from trigreason.host import SERVICES
from trigreason.services.runtime import CONSUMERS

REGENERATE = "run: uv run --frozen --no-sync python -m tests.deploy.nats_auth"


def test_infra_auth_conf_is_generated_from_the_source() -> None:
    assert AUTH_CONF.read_text() == auth_conf(), (
        "run: uv run --frozen --no-sync python -m tests.deploy.nats_auth"
    )


def test_chart_nats_values_are_generated_from_the_source() -> None:
    text = VALUES.read_text()
    assert values_yaml(text) == text, REGENERATE
    nats = yaml.safe_load(text)["nats"]
    assert nats == nats_values()
    assert nats["config"]["merge"]["authorization"] == authorization()
    assert nats["config"]["jetstream"]["enabled"] is True


def test_one_user_per_service_with_its_own_consumer() -> None:
    users = {u["user"]: u for u in authorization()["users"]}
    assert set(users) == set(SERVICES)
    for service, user in users.items():
        allowed = user["permissions"]["publish"]["allow"]
        pulls = {s for s in allowed if s.startswith("$JS.API.CONSUMER.MSG.NEXT.")}
        specs = [CONSUMERS[name] for name in CONSUMES[service]]
        assert pulls == {f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}" for spec in specs}
        assert all(spec.durable.startswith(service) for spec in specs)  # only its own
        assert user["permissions"]["subscribe"]["allow"] == [f"_INBOX.{service}.>"]
        assert not any(s in (">", "$JS.API.>", "_INBOX.>") for s in allowed)
