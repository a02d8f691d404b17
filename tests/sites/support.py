"""Helpers of the edge-cloud tests: sessions through an edge's gateway."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

TERMINAL = ("finished", "failed")


async def start_session(
    http: aiohttp.ClientSession, gateway: str, policy: str = "lrm-only", **params: Any
) -> str:
    body = {"question": "What is 17 * 23?", "policy": policy, "params": {"priming_steps": 1, **params}}
    async with http.post(f"{gateway}/v1/sessions", json=body) as resp:
        assert resp.status == 202, await resp.text()
        session_id: str = (await resp.json())["session_id"]
        return session_id


async def wait_session(
    http: aiohttp.ClientSession, gateway: str, session_id: str, timeout_s: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with http.get(f"{gateway}/v1/sessions/{session_id}") as resp:
            if resp.status == 200:
                doc = await resp.json()
                if doc["status"] in TERMINAL:
                    return doc
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} did not end within {timeout_s}s: {doc}")
