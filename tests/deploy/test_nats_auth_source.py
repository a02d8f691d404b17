"""One source for the NATS authorization (``trigreason.proto``'s ``service_permissions``, derived from the
bus vocabulary): the compose stack's auth.conf and the chart's NATS values are both generated from it
(``make nats-auth``), and these tests fail on drift."""

from __future__ import annotations

import yaml

from tests.deploy.nats_auth import AUTH_CONF, VALUES, auth_conf, nats_values, values_yaml
from trigreason.host import SERVICES
from trigreason.proto import (
    BUS_SERVICES,
    CONSUMERS,
    CONSUMES,
    PRODUCES,
    STREAMS,
    js_api,
    nats_authorization,
    service_permissions,
)

REGENERATE = "run: make nats-auth"


def test_infra_auth_conf_is_generated_from_the_source() -> None:
    assert AUTH_CONF.read_text() == auth_conf(), REGENERATE


def test_chart_nats_values_are_generated_from_the_source() -> None:
    text = VALUES.read_text()
    assert values_yaml(text) == text, REGENERATE
    nats = yaml.safe_load(text)["nats"]
    assert nats == nats_values()
    assert nats["config"]["merge"]["authorization"] == nats_authorization()
    assert nats["config"]["jetstream"]["enabled"] is True


def test_one_user_per_service_with_its_own_consumer() -> None:
    users = {u["user"]: u for u in nats_authorization()["users"]}
    assert set(users) == set(SERVICES) == set(BUS_SERVICES)
    for service, user in users.items():
        allowed = user["permissions"]["publish"]["allow"]
        pulls = {s for s in allowed if s.startswith("$JS.API.CONSUMER.MSG.NEXT.")}
        specs = [CONSUMERS[name] for name in CONSUMES[service]]
        assert pulls == {f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}" for spec in specs}
        assert all(spec.durable.startswith(service) for spec in specs)  # only its own
        assert user["permissions"]["subscribe"]["allow"] == [f"_INBOX.{service}.>"]
        assert not any(s in (">", "$JS.API.>", "_INBOX.>") for s in allowed)


def test_every_consumer_is_pulled_by_one_service_and_every_stream_is_created() -> None:
    pulled = [name for service in BUS_SERVICES for name in CONSUMES[service]]
    assert sorted(pulled) == sorted(CONSUMERS)
    allowed = service_permissions("srm-worker")["publish"]["allow"]
    for stream in STREAMS:
        assert f"$JS.API.STREAM.CREATE.{stream}" in allowed
    # Each produced subject lies inside one of the streams (nothing published that no stream keeps).
    prefixes = [s.removesuffix(">") for spec in STREAMS.values() for s in spec.subjects]
    for service in BUS_SERVICES:
        for subject in PRODUCES[service]:
            assert any(subject.startswith(p) for p in prefixes), (service, subject)


def test_permissions_follow_a_jetstream_domain() -> None:
    """A client naming a JetStream domain (a site's leaf node) publishes to ``$JS.<domain>.API``."""
    allowed = service_permissions("orchestrator", api=js_api("edge1"), inbox="_INBOX.edge1.orchestrator")
    api = [s for s in allowed["publish"]["allow"] if s.startswith("$JS.") and ".API." in s]
    assert api
    assert all(s.startswith("$JS.edge1.API.") for s in api)
    assert allowed["subscribe"]["allow"] == ["_INBOX.edge1.orchestrator.>"]
    assert "$JS.ACK.TRIG_EVT.orchestrator.>" in allowed["publish"]["allow"]
