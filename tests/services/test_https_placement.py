"""Placement 2, the paper's literal setting: the LRM worker at the edge calls a cloud inference endpoint
over HTTPS across the WAN. The cloud side is the load simulator behind a TLS terminator (a WAN emulator
route with a certificate and no delay, as a cloud ingress is); between them and the edge, the emulated WAN.
Certificates come from a throw-away CA (trustme)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.services.cluster import Cluster, start_all, submit_and_wait
from trigreason.proto import BackendError, ConfigError, SessionFinished, SessionParams
from trigreason.services.backend_sim import SimSettings, make_app, start_server
from trigreason.services.worker.backends import BackendSettings, make_backend
from trigreason.wan import WanEmulator, WanRoute, WanSettings

RTT_MS = 60.0


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(root / "ca.pem")
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(root / "server.pem")
    server.private_key_pem.write_to_path(root / "server.key")
    client = ca.issue_cert("edge-lrm-worker")
    client.cert_chain_pems[0].write_to_path(root / "client.pem")
    client.private_key_pem.write_to_path(root / "client.key")
    trustme.CA().cert_pem.write_to_path(root / "other-ca.pem")
    return Pki(root / "ca.pem", root / "server.pem", root / "server.key", root / "client.pem",
               root / "client.key", root / "other-ca.pem")  # fmt: skip


@dataclass
class Cloud:
    url: str  # https://localhost:<port>, through the WAN to the ingress
    wan: WanEmulator
    ingress: WanEmulator


async def _cloud(pki: Pki, *, mutual: bool) -> AsyncIterator[Cloud]:
    sim = SimSettings(port=0, time_per_token_ms=1, answer_after=2, answer_p=1.0, concurrency=8)
    runner, sim_url = await start_server(make_app(sim), host="127.0.0.1", port=0)
    sim_port = int(sim_url.rsplit(":", 1)[1])
    ingress = WanEmulator(
        [WanRoute(upstream_host="127.0.0.1", upstream_port=sim_port, tls_cert=str(pki.cert),
                  tls_key=str(pki.key), tls_client_ca=str(pki.ca) if mutual else None)]
    )  # fmt: skip
    await ingress.start()
    wan = WanEmulator(
        [WanRoute(upstream_host="127.0.0.1", upstream_port=ingress.ports[0])], WanSettings(rtt_ms=RTT_MS)
    )
    await wan.start()
    try:
        yield Cloud(f"https://localhost:{wan.ports[0]}", wan, ingress)
    finally:
        await wan.stop()
        await ingress.stop()
        await runner.cleanup()


@pytest.fixture
async def cloud(pki: Pki) -> AsyncIterator[Cloud]:
    async for c in _cloud(pki, mutual=False):
        yield c


@pytest.fixture
async def mtls_cloud(pki: Pki) -> AsyncIterator[Cloud]:
    async for c in _cloud(pki, mutual=True):
        yield c


async def test_sessions_run_with_the_lrm_over_https_across_the_wan(
    cluster: Cluster, cloud: Cloud, pki: Pki
) -> None:
    sim = SimSettings(port=0, time_per_token_ms=1, answer_after=2, answer_p=1.0)
    runner, edge_url = await start_server(make_app(sim), host="127.0.0.1", port=0)
    srm = await make_backend(edge_url, settings=BackendSettings())
    lrm = await make_backend(cloud.url, settings=BackendSettings(tls_ca=str(pki.ca)))
    cluster.on_close(srm.aclose, lrm.aclose, runner.cleanup)
    await start_all(cluster, srm, lrm)
    t0 = time.perf_counter()
    events = await submit_and_wait(
        cluster.server.url, "tls1", "What is 2 + 2?", SessionParams(priming_steps=3)
    )
    wall = time.perf_counter() - t0
    (end,) = [e for e in events if isinstance(e, SessionFinished)]
    assert end.stats.lrm_calls >= 1
    # Every LRM step crossed the WAN (one round trip each at least), encrypted.
    assert wall >= end.stats.lrm_calls * RTT_MS / 1000
    assert cloud.wan.stats.bytes_up > 0
    assert cloud.ingress.stats.connections_total >= 1


async def test_mutual_tls_needs_the_client_certificate(mtls_cloud: Cloud, pki: Pki) -> None:
    with_cert = BackendSettings(
        tls_ca=str(pki.ca), tls_cert=str(pki.client_cert), tls_key=str(pki.client_key)
    )
    backend = await make_backend(mtls_cloud.url, settings=with_cert)
    await backend.aclose()
    without = BackendSettings(tls_ca=str(pki.ca), max_attempts=1, probe_timeout_s=3)
    with pytest.raises(BackendError):
        await make_backend(mtls_cloud.url, settings=without)


async def test_an_untrusted_certificate_fails_at_once_and_says_which_setting(cloud: Cloud, pki: Pki) -> None:
    t0 = time.perf_counter()
    with pytest.raises(BackendError) as err:
        await make_backend(cloud.url, settings=BackendSettings(tls_ca=str(pki.other_ca)))
    assert time.perf_counter() - t0 < 5  # not retried
    assert err.value.code == "backend_tls"
    assert not err.value.retryable
    assert "TRIGREASON_BACKEND_TLS_CA" in err.value.message


def test_bad_tls_settings_name_the_variable(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"TRIGREASON_BACKEND_TLS_CA=/nowhere/ca\.pem"):
        BackendSettings.from_env({"TRIGREASON_BACKEND_TLS_CA": "/nowhere/ca.pem"})
    with pytest.raises(ConfigError, match="TRIGREASON_BACKEND_TLS_CERT and TRIGREASON_BACKEND_TLS_KEY"):
        BackendSettings.from_env({"TRIGREASON_BACKEND_TLS_CERT": str(pki.client_cert)})
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="TRIGREASON_BACKEND_TLS_CA="):
        BackendSettings.from_env({"TRIGREASON_BACKEND_TLS_CA": str(junk)}).ssl_context()
