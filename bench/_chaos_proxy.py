"""A fault-injecting HTTP proxy in front of the load simulator, for ``bench/chaos.py``.

It forwards every request to the simulator and, on ``POST /generate`` only (``GET /info``, the workers'
protocol probe at start-up, always passes), injects one kind of fault into a share of the requests:

- ``http500``: a TGI-style ``500 {"error": ...}``;
- ``http429``: ``429`` with ``Retry-After: 1``;
- ``refused``: while ``refuse()`` is on, the listening socket is closed (new connections are refused)
  and requests on pooled keep-alive connections have their connection dropped;
- ``hang``: no answer at all until the client gives up (past any timeout);
- ``truncated``: a ``Content-Length`` the body never reaches, then the connection closes;
- ``nonjson``: ``200`` with an HTML body;
- ``oversized``: the simulator's real answer with about 2 MB of text put in front of the step. Which
  requests get it depends on the request body only, so a retried command gets it again (a step whose
  result can never be published must still end its session).

The proxy runs inside the chaos harness's own event loop; ``mode`` and ``rate`` can change between
phases. ``injected`` counts the faults by mode.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import zlib
from collections import Counter
from typing import Any, Literal

import aiohttp
from aiohttp import web

__all__ = ["FaultMode", "FaultProxy"]

FaultMode = Literal["pass", "http500", "http429", "refused", "hang", "truncated", "nonjson", "oversized"]

OVERSIZED_BYTES = 2 * 1024 * 1024
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding"})


class FaultProxy:
    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode: FaultMode = "pass"
        self.rate = 0.0
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self.refusing = False
        self._rng = random.Random(seed)
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: FaultMode, rate: float = 0.0) -> None:
        self.mode = mode
        self.rate = rate

    async def start(self) -> str:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=120), connector=aiohttp.TCPConnector(limit=256)
        )
        # The injected resets and hangs are on purpose: no tracebacks from aiohttp's server about them.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gives up on a hung request cancels its handler.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        server = getattr(self._site, "_server", None)
        if server is not None and server.sockets:
            self.port = int(server.sockets[0].getsockname()[1])
        return self.url

    async def refuse(self, on: bool) -> None:
        """Close (or reopen, on the same port) the listening socket."""
        assert self._runner is not None
        self.refusing = on
        if on and self._site is not None:
            await self._site.stop()
            self._site = None
        elif not on and self._site is None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            for _ in range(50):
                try:
                    await self._site.start()
                    break
                except OSError:  # the port lingers for a moment after close
                    await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    def _fault(self, request: web.Request, body: bytes) -> FaultMode:
        if request.method != "POST" or request.path != "/generate":
            return "pass"
        if self.refusing:
            return "refused"
        if self.mode in ("pass", "refused"):
            return "pass"
        draw = (zlib.crc32(body) % 10_000) / 10_000 if self.mode == "oversized" else self._rng.random()
        return self.mode if draw < self.rate else "pass"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._fault(request, body)
        if fault != "pass":
            self.injected[fault] += 1
        if fault == "refused":
            if request.transport is not None:
                request.transport.close()  # a keep-alive connection made before the socket closed
            raise ConnectionResetError("chaos: refused")
        if fault == "http500":
            return web.json_response(
                {"error": "chaos: injected server error", "error_type": "generation"}, status=500
            )
        if fault == "http429":
            return web.json_response(
                {"error": "chaos: injected overload", "error_type": "overloaded"},
                status=429,
                headers={"Retry-After": "1"},
            )
        if fault == "hang":
            await asyncio.sleep(3600)  # until the client disconnects (which cancels this handler)
        if fault == "nonjson":
            return web.Response(
                status=200, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
            )
        if fault == "truncated":
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.content_length = 4096
            await resp.prepare(request)
            await resp.write(b'{"generated_text": "The answer is')
            await asyncio.sleep(0.05)
            if request.transport is not None:
                request.transport.close()
            return resp
        status, headers, data = await self._forward(request, body)
        self.forwarded += 1
        if fault == "oversized" and status == 200:
            data = _inflate(data)
        return web.Response(status=status, body=data, headers=headers)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self._http is not None
        send = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS | {"host"}}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, data=body, headers=send
        ) as resp:
            data = await resp.read()
            headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
            return resp.status, headers, data


def _inflate(data: bytes) -> bytes:
    """The simulator's answer with ~2 MB of words before the step's text (still a valid TGI answer)."""
    try:
        doc: Any = json.loads(data)
    except ValueError:
        return data
    if isinstance(doc, dict) and isinstance(doc.get("generated_text"), str):
        doc["generated_text"] = "lorem " * (OVERSIZED_BYTES // 6) + doc["generated_text"]
        return json.dumps(doc).encode()
    return data
