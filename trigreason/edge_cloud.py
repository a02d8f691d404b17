"""The edge-cloud stack on one machine (docs/sites.md): a cloud hub nats-server (JetStream domain ``cloud``),
one leaf-node nats-server per edge site (domain = the site's name) dialling the hub over mutual TLS through
a WAN emulator, throw-away TLS material, the CPU inference servers, and every service placed where it
belongs: gateway, orchestrator, trigger-evaluator and SRM worker at each edge, the LRM worker pool in the
cloud. What ``trigreason up --topology edge-cloud`` runs; tests, chaos cases and bench_edge.py use it too::

    from trigreason.edge_cloud import EdgeCloudSpec, edge_cloud_stack

    async with edge_cloud_stack(EdgeCloudSpec(sites=("edge1", "edge2"), wan_rtt_ms=50, gateway_port=0,
                                              srm_url=..., lrm_url=...), tracer_provider=provider) as ec:
        ec.sites["edge1"].gateway_url     # the edge's gateway (the session browser too)
        ec.sites["edge1"].bus             # BusSettings a client at that edge uses (TLS, user, domain)
        ec.wan                            # the emulator on the leaf connections (configure, partition)
        await ec.restart_leaf("edge1")    # kill -9 that edge's nats-server and start it again
        await ec.restart_hub()
        await ec.kill_site("edge2")       # its services stop at once, its nats-server dies (kill -9)

Everything is torn down on exit (Ctrl-C included), as with the single-site embedded stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from opentelemetry.sdk.trace import TracerProvider

from trigreason._site_config import (
    CLOUD_DOMAIN,
    EdgeServer,
    HubServer,
    TlsFiles,
    TlsMaterial,
    edge_config,
    edge_service_permissions,
    hub_config,
)
from trigreason.host import ServiceName, ServiceSettings, run_service
from trigreason.nats_server import LocalNatsServer
from trigreason.proto import (
    LRM_COMMAND_STREAM,
    ConfigError,
    Role,
    TrigReasonError,
    inbox_prefix,
    site_js_api,
)
from trigreason.services.runtime import BusSettings
from trigreason.services.worker.backends import Backend, BackendSettings, make_backend
from trigreason.stack import StackSpec, inference_servers, services_ready

__all__ = [
    "EdgeCloud",
    "EdgeCloudSpec",
    "EdgeServer",
    "HubServer",
    "RunningSite",
    "TlsFiles",
    "TlsMaterial",
    "edge_cloud_stack",
    "edge_config",
    "edge_service_permissions",
    "hub_config",
]

_EDGE_SERVICES: tuple[ServiceName, ...] = ("gateway", "orchestrator", "trigger-evaluator", "srm-worker")
_DRAIN_S = 2.0
_SECOND_NS = 1_000_000_000
_CHILD_STOP_S = 2.0


@dataclass(frozen=True, kw_only=True, slots=True)
class EdgeCloudSpec:
    sites: tuple[str, ...] = ("edge",)
    lrm_workers: int = 1  # the cloud's LRM worker pool (each a consumer of the one shared queue)
    srm_url: str | None = None  # None: a CPU inference server for srm_model (shared by the edges)
    lrm_url: str | None = None  # None: a CPU inference server for lrm_model (the cloud's)
    srm_model: str = "srm"
    lrm_model: str = "lrm"
    gateway_port: int | None = 0  # the first site's gateway (others: any free port); None: no gateways
    wan: bool = True  # the leaf connections go through a WAN emulator
    wan_rtt_ms: float = 0.0
    wan_jitter_ms: float = 0.0
    wan_mbit: float = 0.0  # 0: no cap
    handshake_first: bool = True  # TLS before NATS' INFO, on the client ports and the leaf connections
    concurrency: int | None = None
    server_start_timeout_s: float = 600.0
    leaf_timeout_s: float = 20.0  # the edges' leaf connections must be up within this
    # Where the edges' leaf connections dial instead of this stack's hub (through the WAN emulator when
    # ``wan``): a hub elsewhere; None: the local hub.
    hub_leaf_url: str | None = None

    def __post_init__(self) -> None:
        if not self.sites or len(set(self.sites)) != len(self.sites):
            raise ConfigError(f"sites: one or more distinct names, got {self.sites}")
        for site in self.sites:
            BusSettings(placement="edge", site=site)  # the same check as the services' (one line)
            if site == CLOUD_DOMAIN:
                raise ConfigError(f"site {site!r}: that is the cloud's JetStream domain")
        if self.lrm_workers < 1:
            raise ConfigError(f"lrm_workers must be >= 1, got {self.lrm_workers}")


@dataclass(kw_only=True)
class RunningSite:
    name: str
    server: LocalNatsServer
    bus: BusSettings  # what a client at this edge uses
    gateway_url: str | None = None
    service_passwords: dict[str, str] = field(default_factory=dict, repr=False)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def nats_url(self) -> str:
        return self.server.url


@dataclass(kw_only=True)
class EdgeCloud:
    hub: LocalNatsServer
    cloud_bus: BusSettings  # what a client in the cloud account uses (the LRM workers')
    sites: dict[str, RunningSite]
    tls: TlsMaterial
    srm_url: str
    lrm_url: str
    wan: Any = None  # trigreason.wan.WanEmulator when spec.wan
    cloud_stop: asyncio.Event = field(default_factory=asyncio.Event)
    cloud_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def restart_leaf(self, site: str) -> None:
        """kill -9 the edge's nats-server and start it again (same port, same store)."""
        await self.sites[site].server.restart()

    async def restart_hub(self) -> None:
        await self.hub.restart()

    async def kill_site(self, site: str) -> None:
        """The site dies: its nats-server gets SIGKILL, then its services stop (their drain finds no
        server; each stops within its bound)."""
        running = self.sites[site]
        running.server.kill()
        await _stop_tasks(running.stop, running.tasks, 0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _client_bus(
    base: BusSettings,
    *,
    url: str,
    tls: TlsFiles,
    user: str,
    password: str,
    handshake_first: bool,
    **more: Any,
) -> BusSettings:
    return dataclasses.replace(
        base,
        nats_url=url,
        nats_user=user,
        nats_password=password,
        nats_token=None,
        nats_creds=None,
        nats_tls_ca=str(tls.ca),
        nats_tls_cert=str(tls.cert),
        nats_tls_key=str(tls.key),
        nats_tls_handshake_first=handshake_first,
        storage="file",
        **more,
    )


async def _wait_for_site(hub_bus: BusSettings, site: str, timeout_s: float, leaf_url: str) -> None:
    """Until the site's JetStream answers from the cloud (the leaf connection is up and routes)."""
    nc = await nats.connect(
        hub_bus.nats_url, name="edge-cloud-probe", max_reconnect_attempts=-1, **hub_bus.connect_options()
    )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await nc.request(site_js_api(site) + ".INFO", b"", timeout=1.0)
                return
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    raise TrigReasonError(
        f"edge site {site!r}: its leaf connection to the hub ({leaf_url}) did not come up within "
        f"{timeout_s:.0f}s",
        code="leaf_unavailable",
    )


async def _wait_for_sources(bus: BusSettings, sites: tuple[str, ...], timeout_s: float) -> None:
    """Until the cloud's LRM queue sources every site *and hears from each*: the source's consumer at the
    edge sends a heartbeat every second, so a source heard from within the last second, twice, more than
    a heartbeat apart, has its whole path working (the deliveries' interest has reached the edge; a
    command stored before that would have gone nowhere until the source noticed the gap)."""
    nc = await nats.connect(bus.nats_url, name="edge-cloud-probe", **bus.connect_options())
    try:
        js = nc.jetstream(domain=bus.domain)
        deadline = time.monotonic() + timeout_s
        heard = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                info = await js.stream_info(LRM_COMMAND_STREAM)
                sources = info.sources or []
                fresh = len(sources) == len(sites) and all(
                    s.error is None and 0 <= (s.active if s.active is not None else -1) < _SECOND_NS
                    for s in sources
                )
                heard = heard + 1 if fresh else 0
                if heard >= 2:
                    return
            await asyncio.sleep(1.2)
    finally:
        await nc.close()
    raise TrigReasonError(
        f"the cloud's LRM queue does not hear from every edge site within {timeout_s:.0f}s",
        code="leaf_unavailable",
    )


async def _start_services(
    names: tuple[ServiceName, ...],
    settings_for: Callable[[ServiceName], ServiceSettings],
    *,
    stop: asyncio.Event,
    tracer_provider: TracerProvider,
    backend_factory: Callable[[Role], Any],
    tasks: list[asyncio.Task[None]],
) -> str | None:
    """Start ``names`` as tasks (appended to ``tasks``); return once each is ready, with the gateway's URL."""
    ready: asyncio.Queue[str] = asyncio.Queue()
    own: list[asyncio.Task[None]] = []
    for name in names:
        task = asyncio.create_task(
            run_service(
                name,
                settings_for(name),
                stop=stop,
                tracer_provider=tracer_provider,
                backend_factory=backend_factory,
                on_ready=ready.put_nowait,
            )
        )
        own.append(task)
        tasks.append(task)
    return await services_ready(ready, own, len(names))


async def _stop_tasks(stop: asyncio.Event, tasks: list[asyncio.Task[None]], drain_s: float) -> None:
    stop.set()
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=drain_s + 6.0)
    for task in pending:
        task.cancel()
    await asyncio.wait(tasks, timeout=1.0)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()


@contextlib.asynccontextmanager
async def edge_cloud_stack(
    spec: EdgeCloudSpec,
    *,
    tracer_provider: TracerProvider,
    env: Mapping[str, str] | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> AsyncIterator[EdgeCloud]:
    """Start the hub, the edges, the WAN, the backends and every service; tear all of it down after.
    ``env`` (default ``os.environ``): the ``TRIGREASON_*`` settings, as ``trigreason serve`` reads them."""
    env = dict(os.environ if env is None else env)
    base = ServiceSettings.from_env(env)  # a bad setting fails here, before anything starts
    backend_settings = BackendSettings.from_env(env)
    root = Path(tempfile.mkdtemp(prefix="trig-edge-cloud-"))
    backends = contextlib.AsyncExitStack()
    servers: list[LocalNatsServer] = []
    wan: Any = None
    running: EdgeCloud | None = None
    drain_s = base.host.drain_s if env.get("TRIGREASON_DRAIN_S") else _DRAIN_S
    try:
        tls = TlsMaterial(root / "tls")
        say(f"generated a throw-away CA and certificates in {tls.directory}")
        hub_tls, client_tls = tls.issue("hub"), tls.issue("client")
        cloud_password = secrets.token_urlsafe(16)
        leaf_passwords = {site: secrets.token_urlsafe(16) for site in spec.sites}
        hub_port, leaf_port = _free_port(), _free_port()
        hub_dir = root / "hub"
        hub_dir.mkdir()
        hub = LocalNatsServer(
            store_dir=hub_dir,
            port=hub_port,
            scheme="tls",
            config=hub_config(
                HubServer(
                    port=hub_port,
                    leaf_port=leaf_port,
                    store_dir=hub_dir / "js",
                    tls=hub_tls,
                    cloud_users={"cloud": cloud_password},
                    leaf_users=leaf_passwords,
                    handshake_first=spec.handshake_first,
                )
            ),
        )
        servers.append(hub)
        await hub.start()
        say(f"started the cloud hub nats-server (JetStream domain {CLOUD_DOMAIN}) on {hub.url}")
        upstream = ("127.0.0.1", leaf_port)
        if spec.hub_leaf_url is not None:
            hub_host, _, hub_port_text = spec.hub_leaf_url.partition("://")[2].rpartition(":")
            upstream = (hub_host, int(hub_port_text))
        leaf_targets = dict.fromkeys(spec.sites, upstream)
        if spec.wan:
            from trigreason.wan import WanEmulator, WanRoute, WanSettings

            wan = WanEmulator(
                [
                    WanRoute(upstream_host=upstream[0], upstream_port=upstream[1], name=site)
                    for site in spec.sites
                ],
                WanSettings(rtt_ms=spec.wan_rtt_ms, jitter_ms=spec.wan_jitter_ms, mbit=spec.wan_mbit),
            )
            await wan.start()
            leaf_targets = {site: wan.address(i) for i, site in enumerate(spec.sites)}
            say(
                f"WAN emulator on the leaf connections: rtt {spec.wan_rtt_ms} ms, "
                f"jitter {spec.wan_jitter_ms} ms, {spec.wan_mbit or 'unlimited'} Mbit/s"
            )
        cloud_bus = _client_bus(
            base.bus,
            url=hub.url,
            tls=client_tls,
            user="cloud",
            password=cloud_password,
            handshake_first=spec.handshake_first,
            placement="cloud",
            nats_domain=CLOUD_DOMAIN,
            site=None,
            edge_sites=spec.sites,
        )
        sites: dict[str, RunningSite] = {}
        for site in spec.sites:
            port, site_dir = _free_port(), root / site
            site_dir.mkdir()
            edge_tls = tls.issue(f"edge-{site}")
            password = secrets.token_urlsafe(16)
            # One NATS user per edge service, allowed only its own subjects (the permission generator's,
            # in this site's domain); the site's own user (tests, the chaos harness) may do anything.
            service_passwords: dict[str, str] = {name: secrets.token_urlsafe(16) for name in _EDGE_SERVICES}
            leaf_host, target_port = leaf_targets[site]
            leaf_url = f"tls://{leaf_host}:{target_port}"
            server = LocalNatsServer(
                store_dir=site_dir,
                port=port,
                scheme="tls",
                config=edge_config(
                    EdgeServer(
                        site=site,
                        port=port,
                        store_dir=site_dir / "js",
                        tls=edge_tls,
                        users={site: password, **service_passwords},
                        permissions={name: edge_service_permissions(name, site) for name in _EDGE_SERVICES},
                        hub_leaf_url=leaf_url,
                        leaf_password=leaf_passwords[site],
                        handshake_first=spec.handshake_first,
                    )
                ),
            )
            servers.append(server)
            await server.start()
            bus = _client_bus(
                base.bus,
                url=server.url,
                tls=client_tls,
                user=site,
                password=password,
                handshake_first=spec.handshake_first,
                placement="edge",
                site=site,
                nats_domain=site,
                edge_sites=(),
            )
            sites[site] = RunningSite(name=site, server=server, bus=bus, service_passwords=service_passwords)
            say(f"started edge site {site!r} (leaf node, JetStream domain {site}) on {server.url}")
        for site in spec.sites:
            target = f"hub_leaf_url={spec.hub_leaf_url}" if spec.hub_leaf_url else f"port {leaf_port}"
            await _wait_for_site(cloud_bus, site, spec.leaf_timeout_s, target)
        say("leaf connections up (mutual TLS" + (", through the WAN emulator)" if wan is not None else ")"))

        urls = await backends.enter_async_context(
            inference_servers(
                StackSpec(
                    srm_url=spec.srm_url,
                    lrm_url=spec.lrm_url,
                    srm_model=spec.srm_model,
                    lrm_model=spec.lrm_model,
                    server_start_timeout_s=spec.server_start_timeout_s,
                ),
                say=say,
            )
        )

        async def backend_factory(role: Role) -> Backend:
            return await make_backend(urls[role], settings=backend_settings)

        running = EdgeCloud(
            hub=hub,
            cloud_bus=cloud_bus,
            sites=sites,
            tls=tls,
            srm_url=urls["srm"],
            lrm_url=urls["lrm"],
            wan=wan,
        )
        host: dict[str, Any] = {"metrics_port": 0, "drain_s": drain_s}
        if spec.concurrency is not None:
            host["concurrency"] = spec.concurrency
        for i, (site, running_site) in enumerate(sites.items()):
            site_host: dict[str, Any] = dict(host)
            if spec.gateway_port is not None:
                site_host["port"] = spec.gateway_port if i == 0 else 0
            names = _EDGE_SERVICES if spec.gateway_port is not None else _EDGE_SERVICES[1:]
            site_settings = dataclasses.replace(base, host=dataclasses.replace(base.host, **site_host))

            def settings_for(
                name: ServiceName,
                running_site: RunningSite = running_site,
                site_settings: Any = site_settings,
            ) -> ServiceSettings:
                bus = dataclasses.replace(
                    running_site.bus,
                    nats_user=name,
                    nats_password=running_site.service_passwords[name],
                    inbox_prefix=inbox_prefix(name),
                )
                settings: ServiceSettings = dataclasses.replace(site_settings, bus=bus)
                return settings

            running_site.gateway_url = await _start_services(
                names,
                settings_for,
                stop=running_site.stop,
                tracer_provider=tracer_provider,
                backend_factory=backend_factory,
                tasks=running_site.tasks,
            )
            say(
                f"edge site {site!r}: "
                + ", ".join(names)
                + (f" (gateway {running_site.gateway_url})" if running_site.gateway_url else "")
            )
        cloud_settings = dataclasses.replace(base, bus=cloud_bus, host=dataclasses.replace(base.host, **host))
        for _ in range(spec.lrm_workers):
            await _start_services(
                ("lrm-worker",),
                lambda _name: cloud_settings,
                stop=running.cloud_stop,
                tracer_provider=tracer_provider,
                backend_factory=backend_factory,
                tasks=running.cloud_tasks,
            )
        await _wait_for_sources(cloud_bus, spec.sites, spec.leaf_timeout_s)
        say(f"cloud: {spec.lrm_workers} LRM worker(s) on the queue sourced from " + ", ".join(spec.sites))
        yield running
    finally:
        if running is not None:
            await asyncio.gather(
                *(_stop_tasks(s.stop, s.tasks, drain_s) for s in running.sites.values()),
                _stop_tasks(running.cloud_stop, running.cloud_tasks, drain_s),
            )
        stoppers = [backends.aclose(), *(server.stop(timeout_s=_CHILD_STOP_S) for server in servers)]
        await asyncio.gather(*stoppers)
        if wan is not None:
            await wan.stop()
        shutil.rmtree(root, ignore_errors=True)
