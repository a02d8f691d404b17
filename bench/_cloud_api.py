"""The cloud LRM API's front door for ``bench/bench_edge.py``: it forwards to the cloud's inference server
and bills what that server reports, as a hosted API does.

For every ``POST /generate`` it counts the server's own usage fields (``details.input_length`` prompt
tokens, ``details.generated_tokens`` output tokens) and applies the provider's prefix cache: the longest
prefix the request shares with a recent prompt (the last ``cache_prompts`` ones) is billed as cached
(DeepSeek's context cache, which ``eval``'s prices assume, works on prompt prefixes the same way). The
cached count is written into the answer's ``details.cached_tokens``, as a provider's usage report carries
it, so the sessions' own statistics and the bill agree on what they count. Token counts use the
simulator's tokeniser (about four characters a token). Other routes pass through unbilled.

It also times every request at its front door (``processing_s``: from the request's arrival to its answer,
the cloud's own share of a call), so the benchmark can take it out of the edge's time of the same calls and
keep only what the WAN costs.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["Bill", "CloudApi"]

_HOP = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding", "host"})


class Bill:
    def __init__(self) -> None:
        self.requests = 0
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0
        self.output_tokens = 0

    def snapshot(self) -> dict[str, int]:
        return dict(vars(self))


class CloudApi:
    def __init__(self, upstream: str, *, cache_prompts: int = 256, provider_cache: bool = True) -> None:
        self.upstream = upstream.rstrip("/")
        # False: bill the cached tokens the server itself reports (a real server's own prefix cache).
        self.provider_cache = provider_cache
        self.bill = Bill()
        self._recent: deque[str] = deque(maxlen=cache_prompts)
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.processing_s = 0.0  # summed over every request answered (the cloud's own time)
        self.timed_requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=600), connector=aiohttp.TCPConnector(limit=512)
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = getattr(site, "_server", None)
        assert server is not None
        assert server.sockets
        self.port = int(server.sockets[0].getsockname()[1])
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    def forget(self) -> None:
        """Empty the prefix cache."""
        self._recent.clear()

    def _cached_tokens(self, inputs: str) -> int:
        best = 0
        for prompt in self._recent:
            best = max(best, _shared(prompt, inputs))
        self._recent.append(inputs)
        return best // 4  # whole tokens of the shared prefix (about four characters each)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        t0 = time.perf_counter()
        try:
            return await self._forward(request)
        finally:
            self.processing_s += time.perf_counter() - t0
            self.timed_requests += 1

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            data = await resp.read()
            out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
            status = resp.status
        if request.method == "POST" and request.path == "/generate" and status == 200:
            data = self._billed(body, data)
        return web.Response(status=status, body=data, headers=out_headers)

    def _billed(self, request_body: bytes, data: bytes) -> bytes:
        try:
            inputs = json.loads(request_body)["inputs"]
            doc: Any = json.loads(data)
            details = doc["details"]
            prompt = int(details["input_length"])
            output = int(details["generated_tokens"])
        except (ValueError, KeyError, TypeError):
            return data  # not a billable answer (the benchmark checks the bill is not empty)
        if self.provider_cache:
            cached = min(prompt, self._cached_tokens(str(inputs)))
            details["cached_tokens"] = cached
        else:
            cached = min(prompt, int(details.get("cached_tokens") or 0))
        self.bill.requests += 1
        self.bill.prompt_tokens += prompt
        self.bill.cached_prompt_tokens += cached
        self.bill.output_tokens += output
        return json.dumps(doc).encode()


def _shared(a: str, b: str) -> int:
    """Characters at the start that ``a`` and ``b`` share."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # binary search on slice equality: a few C-level comparisons, not a Python loop
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def cost_usd(bill: dict[str, int], *, input_per_m: float, cached_per_m: float, output_per_m: float) -> float:
    """A bill at per-million-token prices."""
    prompt, cached = bill["prompt_tokens"], bill["cached_prompt_tokens"]
    total = (prompt - cached) * input_per_m + cached * cached_per_m + bill["output_tokens"] * output_per_m
    return total / 1e6 if math.isfinite(total) else math.nan
