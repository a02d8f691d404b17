"""The simulator's HTTP face: TGI's protocol (``/generate``, ``/generate_stream``, ``POST /``, ``/info``,
``/health``, ``/metrics``; the request and response schema shared with tgi-cpu, ``runtime``'s ``Tgi*``) with
simulated prefill and per-token latency behind a concurrency limit."""

from __future__ import annotations

import asyncio
import importlib.metadata
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from msgspec import UNSET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from trigreason.services.runtime import (
    TgiBadRequest,
    TgiDetails,
    TgiPrefillToken,
    TgiResponse,
    TgiStreamDetails,
    TgiStreamResponse,
    TgiToken,
    check_tgi_request,
    decode_tgi_request,
    encode_tgi,
    start_server,
    tgi_sse_event,
)

from ._model import SimGeneration, SimParams, SimToken, Simulator
from ._settings import SimSettings

__all__ = ["make_app", "start_server"]


@dataclass(frozen=True, slots=True)
class _Parsed:
    inputs: str
    params: SimParams
    details: bool
    prefill: bool  # decoder_input_details
    full_text: bool
    stream: bool


class _Injected(Exception):
    """A failure on purpose (``error_rate``): TGI's 500."""


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "backend_sim_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.tokens = Counter("backend_sim_generated_tokens", "Tokens generated", registry=r)
        self.injected = Counter("backend_sim_injected_errors", "Requests failed on purpose", registry=r)
        self.waiting = Gauge("backend_sim_queue_size", "Requests waiting for a generation slot", registry=r)
        self.running = Gauge("backend_sim_running", "Generations in progress", registry=r)


class _State:
    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.sim = Simulator(settings)
        self.slots = asyncio.Semaphore(settings.concurrency)
        # Failures are drawn in arrival order from their own seeded stream, so a run is reproducible.
        self.failures = random.Random(settings.seed + 1)
        self.metrics = _Metrics()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """A generation slot; yields the seconds spent waiting for it."""
        waited = time.perf_counter()
        self.metrics.waiting.inc()
        try:
            await self.slots.acquire()
        finally:
            self.metrics.waiting.dec()
        self.metrics.running.inc()
        try:
            yield time.perf_counter() - waited
        finally:
            self.metrics.running.dec()
            self.slots.release()


_STATE = web.AppKey("state", _State)


def _parse(body: bytes, settings: SimSettings, *, stream: bool | None) -> _Parsed:
    """TGI's request and checks; the sampling parameters a simulator cannot honour are accepted and
    ignored (its tokens are drawn from the configured distribution)."""
    req = decode_tgi_request(body)
    checked = check_tgi_request(
        req,
        default_max_new_tokens=settings.default_max_new_tokens,
        max_stop_sequences=settings.max_stop_sequences,
        max_top_n_tokens=settings.max_top_n_tokens,
        stream=stream,
    )
    p = req.parameters
    if p.forced_tokens:  # its tokens come from a distribution, not a vocabulary: refused, not ignored
        raise TgiBadRequest("Input validation error: `forced_tokens` is not supported by this server")
    if Simulator.input_length(req.inputs) + checked.max_new_tokens > settings.max_total_tokens:
        limit = settings.max_total_tokens
        raise TgiBadRequest(f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {limit}")
    return _Parsed(
        inputs=req.inputs,
        params=SimParams(
            max_new_tokens=checked.max_new_tokens,
            stop=tuple(p.stop),
            seed=p.seed,
            top_n_tokens=checked.top_n_tokens,
        ),
        details=p.details,
        prefill=p.decoder_input_details,
        full_text=bool(p.return_full_text),
        stream=checked.stream,
    )


def _error(status: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


def _token(t: SimToken) -> TgiToken:
    return TgiToken(id=t.id, text=t.text, logprob=t.logprob, special=t.special)


def _text(req: _Parsed, gen: SimGeneration) -> str:
    return req.inputs + gen.text if req.full_text else gen.text


def _details(req: _Parsed, gen: SimGeneration, sim: Simulator | None = None) -> TgiDetails:
    prefill = (
        [TgiPrefillToken(id=i, text=t, logprob=lp) for i, t, lp in sim.prefill(req.inputs)]
        if req.prefill and sim is not None
        else []
    )
    return TgiDetails(
        finish_reason=gen.finish_reason,
        generated_tokens=len(gen.tokens),
        seed=gen.seed,
        prefill=prefill,
        tokens=[_token(t) for t in gen.tokens],
        top_tokens=[[_token(t) for t in top] for top in gen.top_tokens] if req.params.top_n_tokens else UNSET,
        input_length=gen.input_length,
        cached_tokens=0,
    )


def _prefill_s(settings: SimSettings, gen: SimGeneration) -> float:
    return (settings.prefill_ms + settings.prefill_ms_per_token * gen.input_length) / 1000


def _headers(gen: SimGeneration, queued_s: float, inference_s: float) -> dict[str, str]:
    # TGI's response headers (times in milliseconds).
    return {
        "x-compute-type": "backend-sim",
        "x-prompt-tokens": str(gen.input_length),
        "x-generated-tokens": str(len(gen.tokens)),
        "x-queue-time": str(round(queued_s * 1000)),
        "x-inference-time": str(round(inference_s * 1000)),
    }


async def _prepare(request: web.Request, *, stream: bool | None) -> tuple[_Parsed, SimGeneration]:
    state = request.app[_STATE]
    parsed = _parse(await request.read(), state.settings, stream=stream)
    if state.failures.random() < state.settings.error_rate:
        state.metrics.injected.inc()
        raise _Injected("injected failure (error_rate)")
    return parsed, state.sim.generate(parsed.inputs, parsed.params)


async def _respond_json(
    request: web.Request, parsed: _Parsed, gen: SimGeneration, *, compat: bool
) -> web.Response:
    state = request.app[_STATE]
    async with state.slot() as queued_s:
        started = time.perf_counter()
        duration = _prefill_s(state.settings, gen) + len(gen.tokens) * state.settings.time_per_token_ms / 1000
        await asyncio.sleep(duration)
        state.metrics.tokens.inc(len(gen.tokens))
    out = TgiResponse(
        generated_text=_text(parsed, gen),
        details=_details(parsed, gen, state.sim) if parsed.details else UNSET,
    )
    headers = _headers(gen, queued_s, time.perf_counter() - started)
    # TGI's POST / wraps it in a list
    return web.Response(
        body=encode_tgi([out] if compat else out), content_type="application/json", headers=headers
    )


async def _respond_stream(request: web.Request, parsed: _Parsed, gen: SimGeneration) -> web.StreamResponse:
    state = request.app[_STATE]
    async with state.slot() as queued_s:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-accel-buffering": "no",
            }
        )
        resp.headers.update(_headers(gen, queued_s, 0.0))
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        # Deadlines from one start, so per-event overhead does not add up across a long step.
        start = loop.time() + _prefill_s(state.settings, gen)
        per_token = state.settings.time_per_token_ms / 1000
        top_n = parsed.params.top_n_tokens
        try:
            for i, token in enumerate(gen.tokens):
                await asyncio.sleep(max(0.0, start + (i + 1) * per_token - loop.time()))
                last = i == len(gen.tokens) - 1
                details = None
                if last and parsed.details:
                    details = TgiStreamDetails(
                        finish_reason=gen.finish_reason,
                        generated_tokens=len(gen.tokens),
                        seed=gen.seed,
                        input_length=gen.input_length,
                        cached_tokens=0,
                    )
                msg = TgiStreamResponse(
                    index=i + 1,
                    token=_token(token),
                    top_tokens=[_token(t) for t in gen.top_tokens[i]] if top_n else UNSET,
                    generated_text=_text(parsed, gen) if last else None,
                    details=details,
                )
                await resp.write(tgi_sse_event(msg))
                state.metrics.tokens.inc()
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away; the slot is released on the way out
    return resp


async def _handle(request: web.Request, *, stream: bool | None, compat: bool) -> web.StreamResponse:
    try:
        parsed, gen = await _prepare(request, stream=stream)
    except TgiBadRequest as exc:
        return _error(exc.status, exc.message, "validation")
    except _Injected as exc:
        return _error(500, str(exc), "generation")
    if parsed.stream:
        return await _respond_stream(request, parsed, gen)
    return await _respond_json(request, parsed, gen, compat=compat)


async def _generate(request: web.Request) -> web.StreamResponse:
    return await _handle(request, stream=False, compat=False)


async def _generate_stream(request: web.Request) -> web.StreamResponse:
    return await _handle(request, stream=True, compat=False)


async def _compat(request: web.Request) -> web.StreamResponse:
    """TGI's ``POST /``: the body's ``stream`` flag picks SSE or a one-element JSON array."""
    return await _handle(request, stream=None, compat=True)


async def _info(request: web.Request) -> web.Response:
    s = request.app[_STATE].settings
    return web.json_response(
        {
            "model_id": "trigreason/backend-sim",
            "model_sha": None,
            "model_pipeline_tag": "text-generation",
            "model_dtype": "simulated",
            "model_device_type": "cpu",
            "max_concurrent_requests": s.concurrency,
            "max_best_of": 1,
            "max_stop_sequences": s.max_stop_sequences,
            "max_input_tokens": s.max_total_tokens - 1,
            "max_total_tokens": s.max_total_tokens,
            "max_top_n_tokens": s.max_top_n_tokens,
            "validation_workers": 1,
            "max_client_batch_size": 1,
            "router": "trigreason-backend-sim",
            "version": _version(),
            "sha": None,
            "docker_label": None,
            "simulation": {
                "time_per_token_ms": s.time_per_token_ms,
                "prefill_ms": s.prefill_ms,
                "prefill_ms_per_token": s.prefill_ms_per_token,
                "step_tokens": str(s.step_tokens),
                "confident_p": s.confident_p,
                "confident_width": s.confident_width,
                "uncertain_rate": s.uncertain_rate,
                "hesitation_p": s.hesitation_p,
                "answer_after": s.answer_after,
                "answer_p": s.answer_p,
                "error_rate": s.error_rate,
                "seed": s.seed,
            },
        }
    )


def _version() -> str:
    try:
        return importlib.metadata.version("trigreason-backend-sim")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_STATE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _count(request: web.Request, handler: _Handler) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client closed the request
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "other"
        request.app[_STATE].metrics.requests.labels(route=route, status=str(status)).inc()


def make_app(settings: SimSettings) -> web.Application:
    """The simulator as an aiohttp application (no global state: one app, one simulated replica)."""
    app = web.Application(middlewares=[_count], client_max_size=8 * 1024 * 1024)
    app[_STATE] = _State(settings)
    app.router.add_post("/generate", _generate)
    app.router.add_post("/generate_stream", _generate_stream)
    app.router.add_post("/", _compat)
    app.router.add_get("/info", _info)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app
