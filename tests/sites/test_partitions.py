"""A partition of the WAN between an edge and the cloud ends well: LRM steps wait for the link (within the
session's deadline) unless the request said ``on_cloud_unavailable=fail``, which fails them at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests.sites.support import start_session, wait_session
from trigreason.edge_cloud import EdgeCloud, EdgeCloudSpec, edge_cloud_stack


@pytest.fixture
async def one_site(sim_url: str) -> AsyncIterator[EdgeCloud]:
    spec = EdgeCloudSpec(sites=("a",), srm_url=sim_url, lrm_url=sim_url, gateway_port=0, wan_rtt_ms=10)
    async with edge_cloud_stack(spec, tracer_provider=TracerProvider(), env={}) as stack:
        yield stack


async def test_lrm_steps_wait_for_the_wan_and_then_go_on(one_site: EdgeCloud) -> None:
    gateway = one_site.sites["a"].gateway_url
    assert gateway is not None
    async with aiohttp.ClientSession() as http:
        one_site.wan.partition(True)
        session_id = await start_session(http, gateway, "lrm-only")
        await asyncio.sleep(4.0)
        async with http.get(f"{gateway}/v1/sessions/{session_id}") as resp:
            assert (await resp.json())["status"] not in ("finished", "failed")  # waiting, not failed
        one_site.wan.partition(False)
        doc = await wait_session(http, gateway, session_id, timeout_s=60)
    assert doc["status"] == "finished", doc
    assert all(step["role"] == "lrm" for step in doc["steps"])
    # Each step once, in order, although the commands and results crossed a WAN that held them.
    assert [step["index"] for step in doc["steps"]] == list(range(len(doc["steps"])))


async def test_fail_ends_the_session_at_once_with_a_code(one_site: EdgeCloud) -> None:
    gateway = one_site.sites["a"].gateway_url
    assert gateway is not None
    async with aiohttp.ClientSession() as http:
        one_site.wan.partition(True)
        t0 = time.monotonic()
        waiting = await start_session(http, gateway, "lrm-only")  # default: waits
        failing = await start_session(http, gateway, "lrm-only", on_cloud_unavailable="fail")
        doc = await wait_session(http, gateway, failing, timeout_s=20)
        took = time.monotonic() - t0
        async with http.get(f"{gateway}/v1/sessions/{waiting}") as resp:
            other = await resp.json()
        one_site.wan.partition(False)
        assert (await wait_session(http, gateway, waiting, timeout_s=60))["status"] == "finished"
    assert doc["status"] == "failed", doc
    assert doc["end_reason"] == "cloud_unavailable", doc
    assert took < 15, took  # the link's probe notices within seconds, not at the deadline
    assert other["status"] not in ("finished", "failed"), other


async def test_srm_goes_on_with_the_srm_alone_marked_as_such(one_site: EdgeCloud) -> None:
    gateway = one_site.sites["a"].gateway_url
    assert gateway is not None
    async with aiohttp.ClientSession() as http:
        one_site.wan.partition(True)
        session_id = await start_session(http, gateway, "lrm-only", on_cloud_unavailable="srm")
        doc = await wait_session(http, gateway, session_id, timeout_s=30)
        one_site.wan.partition(False)
    assert doc["status"] == "finished", doc
    # Every step was the SRM's, each marked: the session went on without the cloud.
    assert doc["steps"]
    assert {(step["role"], step["trigger"]) for step in doc["steps"]} == {("srm", "cloud_unavailable")}
    assert doc["stats"]["lrm_tokens"] == 0
    assert doc["stats"]["triggers"]["cloud_unavailable"] == len(doc["steps"])
    assert [step["index"] for step in doc["steps"]] == list(range(len(doc["steps"])))
