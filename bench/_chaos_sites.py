"""The edge-cloud chaos cases' stack (``bench/chaos.py --only wan,leaf,hub``): ``trigreason.edge_cloud``'s
hub and edge leaf node (real nats-server processes with JetStream domains, mutual TLS, per-site accounts),
the WAN emulator on the leaf connection, the services (tasks of this process, placed as in production:
gateway, orchestrator, trigger-evaluator and SRM worker at the edge, two LRM workers in the cloud), and the
load simulator as its own process. The faults: the WAN cut for 30 s, the WAN flapping (down 2 s every
10 s for a minute), kill -9 and restart of the edge's nats-server, and of the hub's."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import nats
from _chaos_cluster import Procs, start_simulator
from nats.aio.client import Client as NatsClient
from opentelemetry.sdk.trace import TracerProvider

from trigreason.edge_cloud import EdgeCloud, EdgeCloudSpec, edge_cloud_stack

__all__ = ["SITE", "SiteFault", "site_faults", "sites_stack"]

SITE = "edge1"
WAN_RTT_MS = 20.0

SiteFault = Callable[
    [EdgeCloud, Callable[[], Coroutine[Any, Any, bool]]], Coroutine[Any, Any, dict[str, Any]]
]


async def _quiet(exc: Exception) -> None:
    del exc


@contextlib.asynccontextmanager
async def sites_stack(
    log_dir: Path, *, sim: dict[str, Any], env: dict[str, str]
) -> AsyncIterator[tuple[EdgeCloud, NatsClient]]:
    """The stack, and a client at the edge (for the ledger) that reconnects through restarts."""
    procs = Procs(log_dir)
    try:
        sim_url = await start_simulator(procs, sim, env)
        spec = EdgeCloudSpec(
            sites=(SITE,),
            lrm_workers=2,
            srm_url=sim_url,
            lrm_url=sim_url,
            gateway_port=0,
            wan_rtt_ms=WAN_RTT_MS,
        )
        async with edge_cloud_stack(spec, tracer_provider=TracerProvider(), env=env) as ec:
            bus = ec.sites[SITE].bus
            nc = await nats.connect(
                bus.nats_url,
                name="chaos-harness",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                error_cb=_quiet,
                **bus.connect_options(),
            )
            try:
                yield ec, nc
            finally:
                with contextlib.suppress(Exception):
                    await nc.close()
    finally:
        await asyncio.to_thread(procs.stop_all)


async def wan_partition(ec: EdgeCloud, started: Callable[[], Coroutine[Any, Any, bool]]) -> dict[str, Any]:
    """The WAN holds every byte for 30 s (a blackhole: nothing tells either end), then heals."""
    await started()
    ec.wan.partition(True)
    t0 = time.monotonic()
    await asyncio.sleep(30.0)
    ec.wan.partition(False)
    return {"partition_s": round(time.monotonic() - t0, 1), "wan": ec.wan.state()["stats"]}


async def wan_flap(ec: EdgeCloud, started: Callable[[], Coroutine[Any, Any, bool]]) -> dict[str, Any]:
    """Down 2 s every 10 s, for a minute."""
    await started()
    flaps = 0
    for _ in range(6):
        ec.wan.partition(True)
        await asyncio.sleep(2.0)
        ec.wan.partition(False)
        flaps += 1
        await asyncio.sleep(8.0)
    return {"flaps": flaps, "wan": ec.wan.state()["stats"]}


async def leaf_restart(ec: EdgeCloud, started: Callable[[], Coroutine[Any, Any, bool]]) -> dict[str, Any]:
    """kill -9 of the edge's nats-server (its JetStream store on disk), restarted at once."""
    await started()
    t0 = time.monotonic()
    await ec.restart_leaf(SITE)
    return {"leaf_restart_s": round(time.monotonic() - t0, 2)}


async def hub_restart(ec: EdgeCloud, started: Callable[[], Coroutine[Any, Any, bool]]) -> dict[str, Any]:
    """kill -9 of the hub's nats-server (the cloud's queue on disk), restarted at once."""
    await started()
    t0 = time.monotonic()
    await ec.restart_hub()
    return {"hub_restart_s": round(time.monotonic() - t0, 2)}


def site_faults() -> dict[str, SiteFault]:
    return {
        "wan-partition": wan_partition,
        "wan-flap": wan_flap,
        "leaf-restart": leaf_restart,
        "hub-restart": hub_restart,
    }
