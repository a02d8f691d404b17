"""Bad settings of the edge-cloud topology: one line that names the setting, never a traceback; and the
generated nats-server configurations are valid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from trigreason.edge_cloud import (
    EdgeCloudSpec,
    EdgeServer,
    HubServer,
    TlsMaterial,
    edge_cloud_stack,
    edge_config,
    hub_config,
)
from trigreason.nats_server import LocalNatsServer, find_nats_server
from trigreason.proto import ConfigError, TrigReasonError
from trigreason.services.runtime import Bus, BusSettings


def test_tls_files_that_are_missing_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^TRIGREASON_NATS_TLS_CERT=/nope: no such readable file$"):
        BusSettings(nats_tls_cert="/nope", nats_tls_key="/nope")
    with pytest.raises(ConfigError, match="TRIGREASON_NATS_TLS_CA"):
        BusSettings.from_env({"TRIGREASON_NATS_TLS_CA": str(tmp_path / "ca.pem")})
    cert = str(TlsMaterial(tmp_path).issue("x").cert)
    with pytest.raises(ConfigError, match="TRIGREASON_NATS_TLS_CERT and TRIGREASON_NATS_TLS_KEY go together"):
        BusSettings(nats_tls_cert=cert)


def test_placement_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="TRIGREASON_SITE"):
        BusSettings.from_env({"TRIGREASON_PLACEMENT": "edge"})
    with pytest.raises(ConfigError, match="TRIGREASON_EDGE_SITES"):
        BusSettings.from_env({"TRIGREASON_PLACEMENT": "cloud"})
    with pytest.raises(ConfigError, match="TRIGREASON_NATS_DOMAIN='b'"):
        BusSettings.from_env(
            {"TRIGREASON_PLACEMENT": "edge", "TRIGREASON_SITE": "a", "TRIGREASON_NATS_DOMAIN": "b"}
        )
    with pytest.raises(ConfigError, match=r"TRIGREASON_SITE='a\.b'"):
        BusSettings.from_env({"TRIGREASON_PLACEMENT": "edge", "TRIGREASON_SITE": "a.b"})
    edge = BusSettings.from_env({"TRIGREASON_PLACEMENT": "edge", "TRIGREASON_SITE": "a"})
    assert edge.domain == "a"
    cloud = BusSettings.from_env({"TRIGREASON_PLACEMENT": "cloud", "TRIGREASON_EDGE_SITES": "a,b"})
    assert cloud.edge_sites == ("a", "b")


async def test_a_wrong_domain_is_named() -> None:
    async with LocalNatsServer() as server:
        settings = BusSettings(nats_url=server.url, nats_domain="nowhere", storage="memory")
        with pytest.raises(
            ConfigError, match=r"TRIGREASON_NATS_DOMAIN='nowhere': no JetStream server answers"
        ):
            await Bus.connect(settings, name="test")


async def test_an_unreachable_hub_is_named() -> None:
    spec = EdgeCloudSpec(
        sites=("a",),
        srm_url="http://127.0.0.1:9",
        lrm_url="http://127.0.0.1:9",
        hub_leaf_url="tls://127.0.0.1:9",
        leaf_timeout_s=2.0,
    )
    with pytest.raises(TrigReasonError) as caught:
        async with edge_cloud_stack(spec, tracer_provider=TracerProvider(), env={}):
            pass
    message = caught.value.message
    assert "\n" not in message
    assert "edge site 'a'" in message
    assert "hub_leaf_url=tls://127.0.0.1:9" in message


def test_a_service_with_a_missing_certificate_says_so_in_one_line() -> None:
    env = {**os.environ, "TRIGREASON_NATS_TLS_CERT": "/nope.pem", "TRIGREASON_NATS_TLS_KEY": "/nope-key.pem"}
    done = subprocess.run(
        [sys.executable, "-m", "trigreason", "serve", "orchestrator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: TRIGREASON_NATS_TLS_CERT=/nope.pem: no such readable file"


def test_the_generated_server_configurations_are_valid(tmp_path: Path) -> None:
    material = TlsMaterial(tmp_path / "tls")
    hub = hub_config(
        HubServer(
            port=14222,
            leaf_port=17422,
            store_dir=tmp_path / "hub",
            tls=material.issue("hub"),
            cloud_users={"cloud": "secret"},
            leaf_users={"a": "pa", "b": "pb"},
        )
    )
    edge = edge_config(
        EdgeServer(
            site="a",
            port=14223,
            store_dir=tmp_path / "a",
            tls=material.issue("edge-a"),
            users={"a": "secret"},
            hub_leaf_url="tls://127.0.0.1:17422",
            leaf_password="pa",
        )
    )
    # Each site's account exports only to the cloud; the cloud imports from each.
    assert "SITE_a: {" in hub
    assert "accounts: [CLOUD]" in hub
    assert 'domain: "cloud"' in hub
    assert 'domain: "a"' in edge
    for name, text in (("hub", hub), ("edge", edge)):
        path = tmp_path / f"{name}.conf"
        path.write_text(text)
        done = subprocess.run(
            [str(find_nats_server()), "-t", "-c", str(path)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (name, done.stderr, text)
