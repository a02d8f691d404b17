"""The WAN emulator on real sockets: the delay it adds (round trips through it against direct), that it does
not serialise connections or a stream's chunks, its bandwidth cap, partitions in both modes, the admin
endpoint, and the command with its signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from trigreason.wan import WanEmulator, WanRoute, WanSettings, start_admin

# Scheduling noise on a shared 2-core machine: the added delay is checked to within this.
_TOLERANCE_S = 0.03


@contextlib.asynccontextmanager
async def _server(mode: str = "echo") -> AsyncIterator[int]:
    """A local TCP server: ``echo`` sends back what it reads; ``sink`` answers the byte count at EOF."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = 0
        try:
            while data := await reader.read(65536):
                received += len(data)
                if mode == "echo":
                    writer.write(data)
                    await writer.drain()
            if mode == "sink":
                writer.write(str(received).encode())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


@contextlib.asynccontextmanager
async def _wan(upstream: int, settings: WanSettings) -> AsyncIterator[WanEmulator]:
    async with WanEmulator([WanRoute(upstream_host="127.0.0.1", upstream_port=upstream)], settings) as wan:
        yield wan


async def _rtts(port: int, n: int = 15) -> list[float]:
    """Round trips of a small message on one connection (the connection's own set-up not counted)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        out = []
        for i in range(n):
            msg = f"ping {i}\n".encode()
            t0 = time.perf_counter()
            writer.write(msg)
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(len(msg)), 5) == msg
            out.append(time.perf_counter() - t0)
        return out
    finally:
        writer.close()


async def test_the_added_round_trip_is_the_configured_one() -> None:
    async with _server() as port, _wan(port, WanSettings(rtt_ms=80)) as wan:
        direct = statistics.median(await _rtts(port))
        through = statistics.median(await _rtts(wan.ports[0]))
        assert through - direct == pytest.approx(0.080, abs=_TOLERANCE_S)
        # Changed at run time, for the next chunk.
        wan.configure(rtt_ms=20)
        through = statistics.median(await _rtts(wan.ports[0]))
        assert through - direct == pytest.approx(0.020, abs=_TOLERANCE_S)
        assert wan.stats.bytes_up > 0
        assert wan.stats.bytes_down == wan.stats.bytes_up


async def test_a_new_connection_pays_one_round_trip_for_its_handshake() -> None:
    async with _server() as port, _wan(port, WanSettings(rtt_ms=100)) as wan:
        firsts = []
        for _ in range(5):
            t0 = time.perf_counter()  # before the connection: the handshake's wait starts at the accept
            reader, writer = await asyncio.open_connection("127.0.0.1", wan.ports[0])
            writer.write(b"x")
            assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
            firsts.append(time.perf_counter() - t0)
            writer.close()
        # handshake (1 RTT) + the data's own round trip
        assert statistics.median(firsts) == pytest.approx(0.200, abs=_TOLERANCE_S)


async def test_connections_and_chunks_are_not_serialised() -> None:
    """Ten connections at once each see their own round trips, and ten pipelined messages on one connection
    each come back one round trip after they left (not ten round trips for the last)."""
    async with _server() as port, _wan(port, WanSettings(rtt_ms=100)) as wan:
        t0 = time.perf_counter()
        rtts = await asyncio.gather(*(_rtts(wan.ports[0], n=1) for _ in range(10)))
        elapsed = time.perf_counter() - t0
        # Each pays its message's round trip at least (and its handshake's, part of which may pass before the
        # client resumes on a loaded machine): 0.1-0.2 s each; one after the other would be 2 s.
        assert min(r[0] for r in rtts) > 0.095
        assert elapsed < 0.6

        reader, writer = await asyncio.open_connection("127.0.0.1", wan.ports[0])
        await asyncio.sleep(0.15)  # past the handshake
        sent: list[float] = []

        async def receive() -> list[float]:
            lags = []
            for i in range(10):
                assert await asyncio.wait_for(reader.readexactly(4), 5) == f"{i:04d}".encode()
                lags.append(time.perf_counter() - sent[i])
            return lags

        receiving = asyncio.create_task(receive())
        for i in range(10):
            sent.append(time.perf_counter())
            writer.write(f"{i:04d}".encode())
            await writer.drain()
            await asyncio.sleep(0.02)
        lags = await receiving
        writer.close()
        assert max(lags) == pytest.approx(0.100, abs=3 * _TOLERANCE_S)


async def test_jitter_keeps_each_streams_order_and_bytes() -> None:
    payload = os.urandom(256 * 1024)
    async with _server() as port, _wan(port, WanSettings(rtt_ms=40, jitter_ms=40, seed=3)) as wan:
        reader, writer = await asyncio.open_connection("127.0.0.1", wan.ports[0])
        for i in range(0, len(payload), 1000):
            writer.write(payload[i : i + 1000])
            await writer.drain()
            await asyncio.sleep(0)
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 10) == payload
        writer.close()
        rtts = await _rtts(wan.ports[0], n=20)
        assert max(rtts) - min(rtts) > 0.005  # the jitter is there
        assert max(rtts) < 0.040 + 0.040 + _TOLERANCE_S


async def test_the_bandwidth_cap() -> None:
    size = 1_000_000
    async with _server("sink") as port, _wan(port, WanSettings(mbit=16)) as wan:  # 2 MB/s
        reader, writer = await asyncio.open_connection("127.0.0.1", wan.ports[0])
        t0 = time.perf_counter()
        writer.write(os.urandom(size))
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == str(size).encode()
        elapsed = time.perf_counter() - t0
        writer.close()
        assert elapsed == pytest.approx(size * 8 / 16e6, rel=0.2)  # 0.5 s


async def test_a_blackhole_partition_holds_traffic_until_it_heals() -> None:
    async with _server() as port, _wan(port, WanSettings(rtt_ms=20)) as wan:
        reader, writer = await asyncio.open_connection("127.0.0.1", wan.ports[0])
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"a"
        wan.partition(True)
        writer.write(b"b")
        read1 = asyncio.ensure_future(reader.readexactly(1))
        await asyncio.sleep(0.5)
        assert not read1.done()
        # A new connection waits too.
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", wan.ports[0])
        writer2.write(b"c")
        read2 = asyncio.ensure_future(reader2.readexactly(1))
        await asyncio.sleep(0.3)
        assert not read2.done()
        wan.partition(False)
        assert await asyncio.wait_for(read1, 5) == b"b"  # nothing lost
        assert await asyncio.wait_for(read2, 5) == b"c"
        writer.close()
        writer2.close()
        assert wan.stats.connections_reset == 0


async def test_a_reset_partition_resets_connections_and_refuses_new_ones() -> None:
    async with _server() as port, _wan(port, WanSettings(partition_mode="reset")) as wan:
        reader, writer = await asyncio.open_connection("127.0.0.1", wan.ports[0])
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"a"
        wan.partition(True)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 2)
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", wan.ports[0])
        writer2.write(b"x")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader2.readexactly(1), 2)
        assert wan.stats.connections_reset == 2
        wan.partition(False)
        assert len(await _rtts(wan.ports[0], n=2)) == 2


async def test_the_admin_endpoint_reads_and_changes_the_link() -> None:
    async with _server() as port, _wan(port, WanSettings()) as wan:
        runner, url = await start_admin(wan)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/wan") as resp:
                    doc = await resp.json()
                assert doc["settings"]["rtt_ms"] == 0
                assert doc["routes"][0]["port"] == wan.ports[0]
                async with http.patch(f"{url}/wan", json={"rtt_ms": 60, "jitter_ms": 10}) as resp:
                    assert resp.status == 200
                assert wan.settings.rtt_ms == 60
                async with http.post(f"{url}/wan/partition", json={"mode": "reset"}) as resp:
                    assert (await resp.json())["settings"]["partitioned"] is True
                assert wan.settings.partition_mode == "reset"
                async with http.delete(f"{url}/wan/partition") as resp:
                    assert resp.status == 200
                assert not wan.settings.partitioned
                for body, status, code in [
                    (b"{nope", 400, "invalid_json"),
                    (b'{"rtt_ms": -5}', 422, "invalid_settings"),
                    (b'{"latency": 5}', 422, "invalid_settings"),
                    (b"[1]", 422, "invalid_settings"),
                ]:
                    async with http.patch(f"{url}/wan", data=body) as resp:
                        assert resp.status == status
                        assert (await resp.json())["error"]["code"] == code
                async with http.post(f"{url}/wan/partition", json={"mode": "drop"}) as resp:
                    assert resp.status == 422
                assert wan.settings.rtt_ms == 60  # nothing changed by the bad requests
                assert not wan.settings.partitioned
        finally:
            await runner.cleanup()


async def _line_with(proc: asyncio.subprocess.Process, prefix: str) -> str:
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, "the command ended early"
        if line.startswith(prefix):
            return line.strip()


async def test_the_command_and_its_signals() -> None:
    async with _server() as port:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "trigreason", "wan", "--route", f"0=127.0.0.1:{port}", "--rtt-ms", "30",
            "--admin-port", "0",
            stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            listen = await _line_with(proc, "wan: ")
            wan_port = int(listen.split()[1].rsplit(":", 1)[1])
            admin = (await _line_with(proc, "wan admin: ")).split()[-1]
            assert await _rtts(wan_port, n=3)
            reader, writer = await asyncio.open_connection("127.0.0.1", wan_port)
            await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(0.2)
            writer.write(b"z")
            read = asyncio.ensure_future(reader.readexactly(1))
            await asyncio.sleep(0.4)
            assert not read.done()
            async with aiohttp.ClientSession() as http, http.get(admin) as resp:
                assert (await resp.json())["settings"]["partitioned"] is True
            proc.send_signal(signal.SIGUSR2)
            assert await asyncio.wait_for(read, 5) == b"z"
            writer.close()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--partition-mode", "drop"], "partition_mode"),
        (["--tls-cert", "/nowhere/cert.pem", "--tls-key", "/nowhere/key.pem"], "--tls-cert"),
        (["--route", "7433"], "LISTEN_PORT=UPSTREAM_HOST:UPSTREAM_PORT"),
    ],
)
def test_the_command_refuses_bad_settings_in_one_line(args: list[str], names: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trigreason", "wan", "--route", "0=127.0.0.1:1", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert names in out.stderr
    assert "Traceback" not in out.stderr
