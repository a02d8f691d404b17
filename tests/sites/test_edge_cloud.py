"""Placement 1 across a leaf node: the SRM side at each edge, the LRM pool in the cloud, isolated sites."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from tests.sites.support import start_session, wait_session
from trigreason.edge_cloud import EdgeCloud
from trigreason.proto import LRM_COMMAND_STREAM, command_subject, site_js_api


async def test_two_edge_sites_share_the_cloud_lrm_pool_and_see_only_their_own_sessions(
    two_sites: EdgeCloud,
) -> None:
    gateways = {name: site.gateway_url or "" for name, site in two_sites.sites.items()}
    assert all(gateways.values())
    async with aiohttp.ClientSession() as http:
        started = {
            name: [
                await start_session(http, url, policy) for policy in ("lrm-only", "trigreason", "specreason")
            ]
            for name, url in gateways.items()
        }
        for name, sessions in started.items():
            other = "b" if name == "a" else "a"
            for session_id in sessions:
                doc = await wait_session(http, gateways[name], session_id)
                assert doc["status"] == "finished", doc
                # The LRM wrote steps: every one of them crossed the WAN to the cloud pool and back.
                assert any(step["role"] == "lrm" for step in doc["steps"]), doc
                # The other site has never heard of it.
                async with http.get(f"{gateways[other]}/v1/sessions/{session_id}") as resp:
                    assert resp.status == 404
            async with http.get(f"{gateways[name]}/v1/sessions") as resp:
                listed = {s["session_id"] for s in (await resp.json())["sessions"]}
            assert listed == set(sessions)
    # Both workers of the pool serve one queue, sourced from both sites; nothing is left in it.
    nc = await nats.connect(two_sites.cloud_bus.nats_url, **two_sites.cloud_bus.connect_options())
    try:
        js = nc.jetstream(domain=two_sites.cloud_bus.domain)
        info = await js.stream_info(LRM_COMMAND_STREAM)
        assert info.state.messages == 0
        assert {s.name for s in info.sources or []}
        assert len(info.sources or []) == 2
        consumer = await js.consumer_info(LRM_COMMAND_STREAM, "lrm-worker")
        assert consumer.delivered.stream_seq >= 6
        assert consumer.num_ack_pending == 0
    finally:
        await nc.close()


async def test_a_site_cannot_read_another_sites_traffic(two_sites: EdgeCloud) -> None:
    a, b = two_sites.sites["a"], two_sites.sites["b"]
    seen: list[str] = []

    async def record(msg: Msg) -> None:
        seen.append(msg.subject)

    spy = await nats.connect(a.bus.nats_url, **a.bus.connect_options())
    try:
        await spy.subscribe(">", cb=record)
        await spy.flush()
        async with aiohttp.ClientSession() as http:
            assert b.gateway_url is not None
            session_id = await start_session(http, b.gateway_url)
            doc = await wait_session(http, b.gateway_url, session_id)
            assert doc["status"] == "finished"
        await asyncio.sleep(0.5)
        assert not [s for s in seen if session_id in s], seen
        # Nor reach the other site's JetStream, nor the cloud's, through the hub.
        for api in (site_js_api("b"), site_js_api("cloud")):
            with pytest.raises((NoRespondersError, NatsTimeoutError)):
                await spy.request(f"{api}.INFO", b"", timeout=1.0)
    finally:
        await spy.close()


async def test_a_plaintext_client_is_refused(two_sites: EdgeCloud) -> None:
    for url in (two_sites.sites["a"].nats_url, two_sites.hub.url):
        plain = url.replace("tls://", "nats://")
        with pytest.raises(Exception):  # noqa: B017,PT011 - nats-py raises what the transport raised
            await nats.connect(plain, connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0)
    # TLS without a client certificate: the servers verify clients (mutual TLS).
    bus = two_sites.sites["a"].bus
    no_cert = ssl.create_default_context(cafile=bus.nats_tls_ca)
    with pytest.raises(Exception):  # noqa: B017,PT011
        await nats.connect(
            bus.nats_url,
            tls=no_cert,
            tls_handshake_first=True,
            user=bus.nats_user,
            password=bus.nats_password,
            connect_timeout=1,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )


async def test_killing_one_site_leaves_the_others_sessions_untouched(two_sites: EdgeCloud) -> None:
    a, b = two_sites.sites["a"], two_sites.sites["b"]
    assert a.gateway_url is not None
    assert b.gateway_url is not None
    async with aiohttp.ClientSession() as http:
        before = [await start_session(http, a.gateway_url, "trigreason") for _ in range(3)]
        await two_sites.kill_site("b")
        after = [await start_session(http, a.gateway_url, "lrm-only") for _ in range(3)]
        for session_id in before + after:
            doc = await wait_session(http, a.gateway_url, session_id)
            assert doc["status"] == "finished", doc
            assert any(step["role"] == "lrm" for step in doc["steps"]), doc


async def test_each_edge_service_has_its_own_user_allowed_only_its_subjects(two_sites: EdgeCloud) -> None:
    site = two_sites.sites["a"]
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    options = site.bus.connect_options()
    options.update(user="gateway", password=site.service_passwords["gateway"], inbox_prefix="_INBOX.gateway")
    gateway = await nats.connect(site.bus.nats_url, error_cb=on_error, allow_reconnect=False, **options)
    try:
        await gateway.publish(command_subject("srm"), b"{}")  # the gateway never commands a worker
        await gateway.flush()
        await asyncio.sleep(0.5)
    finally:
        await gateway.close()
    assert any("permissions violation" in e and "trig.cmd.srm" in e for e in errors), errors
