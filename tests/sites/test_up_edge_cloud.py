"""``trigreason up --topology edge-cloud`` as a user runs it: both sites and the WAN come up, the edge's
gateway (and its session browser) answers, a session crosses the WAN, and Ctrl-C stops all of it, leaving
no process behind."""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from tests.services.test_up_lifecycle import _free_port, _wait_http, assert_stopped_cleanly, command
from tests.sites.support import start_session, wait_session


async def test_up_edge_cloud_serves_at_the_edge_and_stops_on_ctrl_c(sim_url: str) -> None:
    port = _free_port()
    args = ["up", "--topology", "edge-cloud", "--port", str(port), "--srm-url", sim_url, "--lrm-url", sim_url]
    args += ["--wan-rtt-ms", "20", "--wan-jitter-ms", "4"]
    with command(args) as up:
        gateway = f"http://127.0.0.1:{port}"
        await _wait_http(f"{gateway}/readyz", up)
        children = up.children()
        assert list(children.values()).count("nats-server") == 2, children  # the hub and the edge
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{gateway}/") as resp:
                assert resp.status == 200
                assert "<html" in (await resp.text()).lower()
            session_id = await start_session(http, gateway, "trigreason")
            doc = await wait_session(http, gateway, session_id)
        assert doc["status"] == "finished", doc
        assert any(step["role"] == "lrm" for step in doc["steps"])
        err = " ".join(up.stderr().split())  # the console wraps long lines
        assert f"gateway {gateway}" in err
        assert "JetStream domain edge" in err
        seconds = await asyncio.to_thread(up.stop, signal.SIGINT, group=True)
        print(f"up --topology edge-cloud stopped {seconds:.2f}s after Ctrl-C")
        assert_stopped_cleanly(up, seconds, children)
