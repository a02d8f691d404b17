from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.nats_auth import ROOT
from trigreason.host import SERVICES
from trigreason.nats_server import find_nats_server
from trigreason.proto import password_variable

NATS_CONF = ROOT / "infra" / "nats" / "nats.conf"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class AuthNats:
    """nats-server on the compose stack's own configuration (infra/nats/nats.conf and its auth.conf)."""

    url: str
    monitor_url: str
    passwords: dict[str, str]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture
async def auth_nats() -> AsyncIterator[AuthNats]:
    # NATS parses a variable taken from the environment as configuration: a password must read as a
    # string (letters and digits, a letter first), as the chart generates them.
    passwords: dict[str, str] = {s: "p" + secrets.token_hex(16) for s in SERVICES}
    env = {**os.environ, **{password_variable(s): p for s, p in passwords.items()}}
    port, monitor = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="trig-nats-auth-") as tmp:
        log = Path(tmp) / "nats.log"
        log.touch()
        # Flags only move the server onto loopback, free ports and a temporary store; the configuration,
        # authorization included, is the file the compose stack mounts.
        cmd = [
            str(find_nats_server()), "-c", str(NATS_CONF),
            "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor),
            "-sd", str(Path(tmp) / "js"), "-l", str(log),
        ]  # fmt: skip
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"nats-server exited {proc.returncode}: {err} {log.read_text()}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    await writer.wait_closed()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            yield AuthNats(f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{monitor}", passwords, log)
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()
