"""schemathesis against the running gateway: every route but the SSE stream answers exactly what its
OpenAPI document says, takes every request the document allows and rejects the ones it does not."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from aiohttp import web

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all
from tests.support import step
from trigreason.services.gateway import GatewaySettings, make_app
from trigreason.services.runtime import Bus

pytestmark = pytest.mark.timeout(180)

FINAL = step("So \\boxed{7}.")
TOKEN = "schemathesis-token"


async def test_schemathesis_finds_nothing(cluster: Cluster, tmp_path: Path) -> None:
    await start_all(cluster, ScriptedBackend("srm", default=FINAL), ScriptedBackend("lrm", default=FINAL))
    bus = await Bus.connect(cluster.settings, name="gateway")
    settings = GatewaySettings(api_tokens=(TOKEN,), session_timeout_s=20.0, sse_keepalive_s=1.0)
    runner = web.AppRunner(make_app(bus, settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    schemathesis = Path(sys.executable).with_name("schemathesis")
    try:
        proc = await asyncio.create_subprocess_exec(
            str(schemathesis),
            "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "--checks",
            "all",
            "--exclude-path",
            "/v1/sessions/{session_id}/events",  # an endless stream until the session ends
            "--max-examples",
            os.environ.get("GATEWAY_SCHEMATHESIS_EXAMPLES", "25"),
            "--workers",
            "1",
            "--seed",
            os.environ.get("GATEWAY_SCHEMATHESIS_SEED", "11"),  # other seeds explore further
            "--generation-database",
            "none",
            "--request-timeout",
            "30",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--no-color",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        out, _ = await proc.communicate()
    finally:
        await runner.cleanup()
        await bus.close()
    report = out.decode(errors="replace")
    print(report)
    assert proc.returncode == 0, report
    assert "Tested: 13" in report, report  # 8 API operations, 5 of the session browser
