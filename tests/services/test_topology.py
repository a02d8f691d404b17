"""The JetStream layout against a real nats-server."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.js.errors import KeyWrongLastSequenceError

from trigreason.nats_server import LocalNatsServer
from trigreason.proto import COMMAND_STREAM, CONSUMERS, EVENT_STREAM, command_subject, event_subject
from trigreason.services.runtime import BusSettings, ensure_topology


async def test_topology_is_idempotent_and_deduplicates_commands(nats_server: LocalNatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        settings = BusSettings(nats_url=nats_server.url)
        kv = await ensure_topology(js, settings)
        await ensure_topology(js, settings)  # a second replica starting: no error, nothing changes
        assert {c.name for c in await js.consumers_info(COMMAND_STREAM)} == {"srm-worker", "lrm-worker"}
        assert {c.name for c in await js.consumers_info(EVENT_STREAM)} == {
            "orchestrator",
            "trigger-evaluator",
        }

        # The same command id published twice (a crash between publish and snapshot) is stored once.
        for _ in range(2):
            ack = await js.publish(command_subject("srm"), b"{}", headers={"Nats-Msg-Id": "s.0.0.srm"})
        assert ack.duplicate
        info = await js.stream_info(COMMAND_STREAM)
        assert info.state.messages == 1

        # Session snapshots: compare-and-set on the revision.
        rev = await kv.create("s", b"v1")
        await kv.update("s", b"v2", last=rev)
        with pytest.raises(KeyWrongLastSequenceError):
            await kv.update("s", b"v3", last=rev)
    finally:
        await nc.close()


async def test_work_queue_consumer_is_shared_by_replicas(nats_server: LocalNatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_topology(js, BusSettings(nats_url=nats_server.url))
        for i in range(10):
            await js.publish(command_subject("srm"), str(i).encode(), headers={"Nats-Msg-Id": f"c{i}"})
        spec = CONSUMERS["srm-worker"]
        a = await js.pull_subscribe(spec.subjects[0], durable=spec.durable, stream=spec.stream)
        b = await js.pull_subscribe(spec.subjects[0], durable=spec.durable, stream=spec.stream)
        got = list(await a.fetch(5, timeout=2)) + list(await b.fetch(5, timeout=2))
        assert sorted(int(m.data) for m in got) == list(range(10))  # each command to exactly one replica
        await asyncio.gather(*(m.ack() for m in got))
    finally:
        await nc.close()


async def test_server_restart_keeps_streams(nats_server: LocalNatsServer) -> None:
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        js = nc.jetstream()
        await ensure_topology(js, BusSettings(nats_url=nats_server.url))
        await js.publish(event_subject("s1", "requested"), b"x")
        await nats_server.restart()
        for _ in range(100):
            if nc.is_connected:
                break
            await asyncio.sleep(0.05)
        info = await js.stream_info(EVENT_STREAM)
        assert info.state.messages == 1
    finally:
        await nc.close()
