"""The WAN emulator: an asyncio TCP proxy that adds delay, jitter, a bandwidth cap and partitions.

This machine's kernel has no ``sch_netem``, so the WAN between an edge site and the cloud is a proxy in
user space. Each route listens on a local port and forwards to one upstream; every connection gets two
pipes (towards the upstream and back), each a reader that stamps every chunk with its departure time
(``_link.depart_at``) and a sender that delivers it then. The delay is therefore applied per direction and
per chunk, without serialising connections: a chunk arriving at ``t`` leaves at ``t`` + one-way delay +
jitter, and a stream's order is kept. A new connection pays one round trip (TCP's handshake) before its
first byte travels; TLS handshakes pay theirs naturally, since their bytes cross the delayed pipes.

Settings change at run time (``configure``, ``partition``), from the admin endpoint (``_admin``) or from
signals (``install_signal_handlers``: SIGUSR1 cuts the link, SIGUSR2 heals it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import signal
import socket
import ssl
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ._link import LinkState, PartitionMode, WanSettings, depart_at, one_way_delay_s

__all__ = ["WanEmulator", "WanRoute", "WanStats"]

_CHUNK = 64 * 1024
# Bytes a pipe holds before it stops reading (then TCP's own flow control pushes back on the sender): the
# emulated link's buffer, large enough for a bandwidth-delay product of 1 Gbit/s x 150 ms / 8... and a bit.
_PIPE_LIMIT = 16 * 1024 * 1024
_UP, _DOWN = 0, 1


class WanRoute(msgspec.Struct, frozen=True, kw_only=True):
    """One forwarded port: connections to ``listen_host:listen_port`` go to ``upstream_host:upstream_port``
    across the emulated WAN. ``listen_port = 0`` picks a free port (see ``WanEmulator.ports``).

    With ``tls_cert`` and ``tls_key`` the route accepts TLS and forwards plain TCP: a TLS terminator, as a
    cloud ingress in front of an inference server is (``tls_client_ca`` also asks clients for a certificate
    signed by it). Put it on the far side of the WAN (an emulator with no delay in front of the server), so
    the handshake's bytes cross the emulated WAN."""

    upstream_host: str
    upstream_port: int
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    name: str = ""
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_cert is None or self.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.tls_client_ca)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        if self.tls_client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class WanStats(msgspec.Struct, kw_only=True):
    connections_total: int = 0
    connections_open: int = 0
    connections_reset: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    last_departure: list[float] = field(default_factory=lambda: [0.0, 0.0])
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                _reset(writer)
        for task in self.tasks:
            task.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a FIN: what a broken path looks like to the ends."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class WanEmulator:
    """The WAN between sites, for any number of routes sharing one link (its delay, bandwidth and state).

    Use it in-process::

        async with WanEmulator([WanRoute(upstream_host="127.0.0.1", upstream_port=7422)],
                               WanSettings(rtt_ms=50)) as wan:
            port = wan.ports[0]
            wan.configure(rtt_ms=150)
            wan.partition(True)

    or as a command: ``trigreason wan --route 7433=127.0.0.1:7422 --rtt-ms 50 --admin-port 7480``.
    """

    def __init__(self, routes: list[WanRoute], settings: WanSettings | None = None) -> None:
        if not routes:
            raise ValueError("a WAN emulator needs at least one route")
        self.routes = list(routes)
        self._settings = settings or WanSettings()
        self.stats = WanStats()
        self._rng = random.Random(self._settings.seed)
        self._links = [LinkState(), LinkState()]
        self._up = asyncio.Event()
        self._servers: list[asyncio.Server] = []
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.ports: list[int] = []
        self._apply_partition()

    # -- settings ------------------------------------------------------------------------------------

    @property
    def settings(self) -> WanSettings:
        return self._settings

    def configure(self, **changes: Any) -> WanSettings:
        """Change any of ``WanSettings``' fields now (bad values raise ``ValueError``, nothing changes)."""
        unknown = set(changes) - set(WanSettings.__struct_fields__)
        if unknown:
            raise ValueError(f"unknown WAN settings: {', '.join(sorted(unknown))}")
        new = msgspec.structs.replace(self._settings, **changes)
        # replace() skips __post_init__ checks on frozen structs: validate through a round trip.
        new = msgspec.convert(msgspec.to_builtins(new), WanSettings)
        if new.seed != self._settings.seed:
            self._rng.seed(new.seed)
        self._settings = new
        self._apply_partition()
        return new

    def partition(self, on: bool, mode: PartitionMode | None = None) -> WanSettings:
        """Cut the link (``on``) or heal it; ``mode`` overrides the settings' ``partition_mode``."""
        changes: dict[str, Any] = {"partitioned": on}
        if mode is not None:
            changes["partition_mode"] = mode
        return self.configure(**changes)

    def _apply_partition(self) -> None:
        if not self._settings.partitioned:
            self._up.set()
            return
        self._up.clear()
        if self._settings.partition_mode == "reset":
            for conn in list(self._conns):
                conn.reset()
                self.stats.connections_reset += 1

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """SIGUSR1 cuts the link (in the settings' ``partition_mode``), SIGUSR2 heals it."""
        loop = loop or asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.partition, True)
        loop.add_signal_handler(signal.SIGUSR2, self.partition, False)

    # -- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        for route in self.routes:
            server = await asyncio.start_server(
                functools.partial(self._serve, route),
                route.listen_host,
                route.listen_port,
                limit=_CHUNK,
                ssl=route.ssl_context(),
            )
            self._servers.append(server)
            self.ports.append(int(server.sockets[0].getsockname()[1]))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        self.ports.clear()

    async def __aenter__(self) -> WanEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def address(self, index: int = 0) -> tuple[str, int]:
        """Where clients connect to reach route ``index``'s upstream through the WAN."""
        return self.routes[index].listen_host, self.ports[index]

    def state(self) -> dict[str, Any]:
        return {
            "settings": msgspec.to_builtins(self._settings),
            "stats": msgspec.to_builtins(self.stats),
            "routes": [
                {**msgspec.to_builtins(route), "port": port}
                for route, port in zip(self.routes, self.ports, strict=False)
            ],
        }

    # -- connections ---------------------------------------------------------------------------------

    async def _serve(
        self, route: WanRoute, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = _Conn(client=writer)
        self.stats.connections_total += 1
        if self._settings.partitioned and self._settings.partition_mode == "reset":
            self.stats.connections_reset += 1
            _reset(writer)
            return
        self._conns.add(conn)
        self.stats.connections_open += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            # TCP's handshake crosses the WAN once before any data does; in a partition it waits for the
            # link (a blackholed SYN is retried until it gets through).
            await self._wait_up()
            await asyncio.sleep(2 * one_way_delay_s(self._settings, self._rng.random()))
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    route.upstream_host, route.upstream_port, limit=_CHUNK
                )
            except OSError:
                _reset(writer)
                return
            conn.upstream = up_writer
            conn.tasks = [
                asyncio.create_task(self._pipe(conn, reader, up_writer, _UP)),
                asyncio.create_task(self._pipe(conn, up_reader, writer, _DOWN)),
            ]
            # Both directions end cleanly (EOF passed on), or the first failure resets both ends.
            done, _ = await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.cancelled() or t.exception() is not None for t in done):
                conn.reset()
                await asyncio.gather(*conn.tasks, return_exceptions=True)
            else:
                for w in (writer, up_writer):
                    w.close()
        except asyncio.CancelledError:
            # Only stop() cancels a connection's task (asyncio's server owns it and logs a re-raise).
            conn.reset()
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self._handlers.discard(task)
            self._conns.discard(conn)
            self.stats.connections_open -= 1

    async def _wait_up(self) -> bool:
        """Wait while the link is cut; True when it had to wait."""
        if self._up.is_set():
            return False
        await self._up.wait()
        return True

    async def _pipe(
        self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: int
    ) -> None:
        """Read ``src`` as fast as it comes (up to the link's buffer), deliver each chunk to ``dst`` when it
        is due. A failure on either side propagates: the caller resets both ends, as a broken path does."""
        loop = asyncio.get_running_loop()
        queue: deque[tuple[float, bytes]] = deque()
        queued = 0
        more = asyncio.Event()  # something to send
        room = asyncio.Event()  # the buffer has room again
        room.set()

        async def send() -> None:
            nonlocal queued
            while True:
                while not queue:
                    more.clear()
                    await more.wait()
                when, data = queue[0]
                delay = when - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if await self._wait_up():
                    # Held in a partition: once healed, the held bytes still have to cross the link.
                    await asyncio.sleep(one_way_delay_s(self._settings, self._rng.random()))
                queue.popleft()
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    else:  # TLS has no half-close: the end of one direction ends the connection
                        dst.close()
                    return
                queued -= len(data)
                if queued <= _PIPE_LIMIT:
                    room.set()
                dst.write(data)
                await dst.drain()
                if direction == _UP:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)

        sender = asyncio.create_task(send())
        try:
            while True:
                data = await src.read(_CHUNK)
                self._links[direction], when = depart_at(
                    self._links[direction],
                    self._settings,
                    now=loop.time(),
                    nbytes=len(data),
                    draw=self._rng.random(),
                    last_departure=conn.last_departure[direction],
                )
                conn.last_departure[direction] = when
                queue.append((when, data))
                queued += len(data)
                more.set()
                if not data:
                    break
                if queued > _PIPE_LIMIT:
                    room.clear()
                    await room.wait()
            await sender
        finally:
            sender.cancel()
