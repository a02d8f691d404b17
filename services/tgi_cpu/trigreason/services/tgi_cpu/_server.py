"""The HTTP server (aiohttp) speaking TGI's protocol in front of one ``LlamaEngine``.

One generation at a time: llama.cpp's context is not thread-safe, so requests wait in a bounded asyncio
queue and one worker task hands them, in order, to a single engine thread. A full queue answers 429 with
``Retry-After``. A client that goes away (or a cancelled handler) sets the job's cancel event, which the
engine checks before every token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from trigreason.services.runtime import TgiBadRequest, encode_tgi, start_server, tgi_sse_event

from ._engine import Generation, LlamaEngine, StreamToken
from ._errors import EngineError, GenerationCancelled, InputValidationError, Overloaded
from ._protocol import ParsedRequest, generate_response, parse_request, stream_message
from ._settings import TgiCpuSettings

__all__ = ["make_app", "start_server"]

_log = structlog.get_logger("trigreason.tgi_cpu")


@dataclass(eq=False, kw_only=True)
class _Job:
    tokens: list[int]
    request: ParsedRequest
    cancel: threading.Event = field(default_factory=threading.Event)
    # Streaming jobs get each token here, then the final Generation or the exception.
    events: asyncio.Queue[StreamToken | Generation | BaseException] | None = None
    done: asyncio.Future[Generation] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "trigreason_tgi_cpu_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "trigreason_tgi_cpu_prompt_tokens", "prompt tokens received", registry=registry
        )
        self.cached_tokens = Counter(
            "trigreason_tgi_cpu_cached_prompt_tokens",
            "prompt tokens reused from the K/V cache",
            registry=registry,
        )
        self.generated_tokens = Counter(
            "trigreason_tgi_cpu_generated_tokens", "tokens generated", registry=registry
        )
        self.cancelled = Counter(
            "trigreason_tgi_cpu_cancelled_generations",
            "generations stopped because the client left",
            registry=registry,
        )
        self.queue_depth = Gauge("trigreason_tgi_cpu_queue_depth", "requests waiting", registry=registry)
        self.busy = Gauge("trigreason_tgi_cpu_busy", "1 while a generation runs", registry=registry)
        self.time_per_token = Histogram(
            "trigreason_tgi_cpu_time_per_token_seconds",
            "decode time per generated token",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0),
            registry=registry,
        )
        # Their _sum series are the seconds spent evaluating prompts and generating tokens in all.
        self.prefill = Histogram(
            "trigreason_tgi_cpu_prefill_seconds", "prompt evaluation time per request", registry=registry
        )
        self.decode = Histogram(
            "trigreason_tgi_cpu_decode_seconds", "token generation time per request", registry=registry
        )
        self.evictions = Counter(
            "trigreason_tgi_cpu_cache_evictions",
            "cache slots dropped because the K/V cache was full",
            registry=registry,
        )
        self.queue_time = Histogram(
            "trigreason_tgi_cpu_queue_seconds", "time waiting for the engine", registry=registry
        )


class _Scheduler:
    """The bounded queue and the one worker that feeds the engine thread."""

    def __init__(self, engine: LlamaEngine, settings: TgiCpuSettings, metrics: _Metrics) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=settings.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tgi-cpu-engine")
        self._worker: asyncio.Task[None] | None = None
        self._current: _Job | None = None
        self._evictions_seen = engine.evictions
        metrics.queue_depth.set_function(self.queue.qsize)

    @property
    def healthy(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def submit(self, job: _Job) -> None:
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Overloaded("Model is overloaded") from None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name="tgi-cpu-worker")

    async def stop(self) -> None:
        if self._current is not None:
            self._current.cancel.set()
        while not self.queue.empty():
            self.queue.get_nowait().cancel.set()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self.queue.get()
            if job.cancel.is_set() or job.done.done():
                continue  # its client left while it waited
            job.started_at = time.perf_counter()
            self.metrics.queue_time.observe(job.started_at - job.queued_at)
            on_token: Callable[[StreamToken], None] | None = None
            if job.events is not None:
                on_token = functools.partial(_forward, loop, job.events)
            call = functools.partial(
                self.engine.generate, job.tokens, job.request.params, cancel=job.cancel, on_token=on_token
            )
            self._current = job
            self.metrics.busy.set(1)
            outcome: Generation | BaseException
            try:
                outcome = await loop.run_in_executor(self._executor, call)
            except asyncio.CancelledError:
                job.cancel.set()  # shutting down: let the engine thread stop at the next token
                raise
            except Exception as exc:
                outcome = exc
            finally:
                self._current = None
                self.metrics.busy.set(0)
            if isinstance(outcome, GenerationCancelled):
                self.metrics.cancelled.inc()
            if job.events is not None:
                # Token events were queued with call_soon_threadsafe before the executor future
                # resolved, so the outcome lands after the last token.
                job.events.put_nowait(outcome)
            elif not job.done.done():
                if isinstance(outcome, Generation):
                    job.done.set_result(outcome)
                elif job.cancel.is_set():
                    job.done.cancel()  # nobody waits for it any more
                else:
                    job.done.set_exception(outcome)
            if isinstance(outcome, Generation):
                self._count(outcome)

    def _count(self, gen: Generation) -> None:
        m = self.metrics
        m.prompt_tokens.inc(gen.input_length)
        m.cached_tokens.inc(gen.cached_tokens)
        m.generated_tokens.inc(len(gen.tokens))
        m.prefill.observe(gen.prefill_s)
        m.decode.observe(gen.decode_s)
        evictions = self.engine.evictions - self._evictions_seen
        if evictions > 0:
            m.evictions.inc(evictions)
        self._evictions_seen += evictions
        if gen.tokens:
            m.time_per_token.observe(gen.decode_s / len(gen.tokens))


def _forward(loop: asyncio.AbstractEventLoop, events: asyncio.Queue[Any], tok: StreamToken) -> None:
    """Called in the engine thread: hand the token to the event loop."""
    loop.call_soon_threadsafe(events.put_nowait, tok)


_SCHEDULER = web.AppKey("scheduler", _Scheduler)
_METRICS = web.AppKey("metrics", _Metrics)
_SETTINGS = web.AppKey("settings", TgiCpuSettings)
_ENGINE = web.AppKey("engine", LlamaEngine)


def _error(status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status, headers=headers)


def _error_for(exc: Exception, settings: TgiCpuSettings) -> web.Response:
    if isinstance(exc, TgiBadRequest):
        return _error(exc.status, exc.message, "validation")
    if isinstance(exc, InputValidationError):
        return _error(422, exc.message, "validation")
    if isinstance(exc, Overloaded):
        return _error(429, exc.message, "overloaded", {"Retry-After": str(settings.retry_after_s)})
    if isinstance(exc, GenerationCancelled):
        return _error(503, "generation cancelled: the server is shutting down", "incomplete_generation")
    if isinstance(exc, EngineError):
        return _error(424, f"Request failed during generation: {exc.message}", "generation")
    _log.exception("unexpected error")
    return _error(500, "Incomplete generation", "incomplete_generation")


async def _prepare(request: web.Request, *, stream: bool | None) -> tuple[ParsedRequest, _Job]:
    """Parse, tokenize, check the length and queue the job (raises typed errors)."""
    app = request.app
    settings, engine, scheduler = app[_SETTINGS], app[_ENGINE], app[_SCHEDULER]
    parsed = parse_request(await request.read(), settings, stream=stream)
    # Tokenizing reads only the vocabulary, so it may run while the engine thread decodes; off the event
    # loop because a long body takes a while.
    tokens = await asyncio.to_thread(engine.tokenize, parsed.inputs)
    if parsed.truncate is not None:
        tokens = tokens[-parsed.truncate :]
    engine.check_length(len(tokens), parsed.params.max_new_tokens)
    engine.check_forced(parsed.params)
    job = _Job(tokens=tokens, request=parsed)
    if parsed.stream:
        job.events = asyncio.Queue()
    scheduler.submit(job)
    return parsed, job


def _timing_headers(job: _Job, gen: Generation) -> dict[str, str]:
    """TGI's response headers (milliseconds, except x-compute-time in seconds), plus x-cached-tokens."""
    now = time.perf_counter()
    total = now - job.queued_at
    inference = now - job.started_at
    n = max(len(gen.tokens), 1)
    return {
        "x-compute-type": "cpu",
        "x-compute-time": f"{total:.6f}",
        "x-total-time": str(round(total * 1000)),
        "x-queue-time": str(round((job.started_at - job.queued_at) * 1000)),
        "x-inference-time": str(round(inference * 1000)),
        "x-time-per-token": str(round(inference * 1000 / n)),
        "x-prompt-tokens": str(gen.input_length),
        "x-cached-tokens": str(gen.cached_tokens),
        "x-generated-tokens": str(len(gen.tokens)),
    }


async def _respond_json(request: web.Request, *, compat: bool) -> web.Response:
    settings = request.app[_SETTINGS]
    try:
        parsed, job = await _prepare(request, stream=False)
    except (TgiBadRequest, InputValidationError, Overloaded) as exc:
        return _error_for(exc, settings)
    try:
        gen = await asyncio.shield(job.done)
    except asyncio.CancelledError:
        job.cancel.set()  # the client went away: stop at the next token
        raise
    except (EngineError, GenerationCancelled, InputValidationError) as exc:
        return _error_for(exc, settings)
    _log_request(request, gen)
    body = generate_response(parsed, gen)
    return web.Response(
        body=encode_tgi([body] if compat else body),  # TGI's POST / wraps it in a list
        content_type="application/json",
        headers=_timing_headers(job, gen),
    )


async def _respond_stream(request: web.Request, parsed: ParsedRequest, job: _Job) -> web.StreamResponse:
    assert job.events is not None
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    try:
        await resp.prepare(request)
        pending: StreamToken | None = None
        while True:
            item = await job.events.get()
            if isinstance(item, StreamToken):
                if item.last:
                    pending = item  # written with generated_text once the engine returns
                    continue
                await resp.write(tgi_sse_event(stream_message(parsed, item, None)))
            elif isinstance(item, Generation):
                if pending is not None:
                    await resp.write(tgi_sse_event(stream_message(parsed, pending, item)))
                _log_request(request, item)
                break
            else:
                error_type = "generation" if isinstance(item, EngineError) else "incomplete_generation"
                message = item.message if isinstance(item, EngineError) else "Incomplete generation"
                await resp.write(tgi_sse_event({"error": message, "error_type": error_type}))
                break
        await resp.write_eof()
    except (asyncio.CancelledError, ConnectionError):
        job.cancel.set()
        raise
    finally:
        job.cancel.set()  # harmless once finished; stops the engine if this handler ended early
    return resp


def _log_request(request: web.Request, gen: Generation) -> None:
    _log.info(
        "generated",
        route=request.path,
        traceparent=request.headers.get("traceparent"),  # accepted for correlation, not forwarded
        input_length=gen.input_length,
        cached_tokens=gen.cached_tokens,
        generated_tokens=len(gen.tokens),
        finish_reason=gen.finish_reason,
        prefill_ms=round(gen.prefill_s * 1000, 1),
        decode_ms=round(gen.decode_s * 1000, 1),
    )


async def _stream_or_error(request: web.Request, *, stream: bool | None) -> web.StreamResponse:
    settings = request.app[_SETTINGS]
    try:
        parsed, job = await _prepare(request, stream=stream)
    except (TgiBadRequest, InputValidationError, Overloaded) as exc:
        return _error_for(exc, settings)
    return await _respond_stream(request, parsed, job)


async def _generate(request: web.Request) -> web.StreamResponse:
    return await _respond_json(request, compat=False)


async def _generate_stream(request: web.Request) -> web.StreamResponse:
    return await _stream_or_error(request, stream=True)


async def _compat(request: web.Request) -> web.StreamResponse:
    """TGI's ``POST /``: the body's ``stream`` flag picks SSE or a one-element JSON array."""
    body = await request.read()
    try:
        wants_stream = bool(json.loads(body).get("stream", False))
    except (ValueError, AttributeError):
        wants_stream = False  # parse_request reports the error properly
    if wants_stream:
        return await _stream_or_error(request, stream=True)
    return await _respond_json(request, compat=True)


async def _info(request: web.Request) -> web.Response:
    engine, settings = request.app[_ENGINE], request.app[_SETTINGS]
    return web.json_response(
        {
            "model_id": engine.model_id,
            "model_sha": None,
            "model_pipeline_tag": "text-generation",
            "model_dtype": "gguf",
            "model_device_type": "cpu",
            "max_concurrent_requests": settings.max_queue + 1,
            "max_best_of": 1,
            "max_stop_sequences": settings.max_stop_sequences,
            "max_input_tokens": engine.max_input_tokens,
            "max_total_tokens": engine.n_ctx,
            "max_top_n_tokens": settings.max_top_n_tokens,
            "validation_workers": 1,
            "max_client_batch_size": 1,
            "router": "trigreason-tgi-cpu",
            "version": _version(),
            "sha": None,
            "docker_label": None,
            "prefix_reuse": engine.prefix_reuse,
            "cache_slots": engine.cache_slots,
            "threads": engine.n_threads,
        }
    )


def _version() -> str:
    try:
        return importlib.metadata.version("trigreason-tgi-cpu")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def _health(request: web.Request) -> web.Response:
    if request.app[_SCHEDULER].healthy:
        return web.Response(status=200)
    return _error(503, "unhealthy", "healthcheck")


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(request.app[_METRICS].registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _count_requests(request: web.Request, handler: _Handler) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # client closed the request (nginx's convention)
        raise
    finally:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
        request.app[_METRICS].requests.labels(route=route, status=str(status)).inc()


def make_app(engine: LlamaEngine, settings: TgiCpuSettings) -> web.Application:
    """The TGI-protocol application around ``engine``; its worker starts and stops with the app."""
    app = web.Application(middlewares=[_count_requests], client_max_size=8 * 1024 * 1024)
    metrics = _Metrics(CollectorRegistry())
    app[_SETTINGS] = settings
    app[_ENGINE] = engine
    app[_METRICS] = metrics

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        scheduler = _Scheduler(engine, settings, metrics)
        app[_SCHEDULER] = scheduler
        await scheduler.start()
        yield
        await scheduler.stop()

    app.cleanup_ctx.append(scheduler_ctx)
    app.router.add_post("/generate", _generate)
    app.router.add_post("/generate_stream", _generate_stream)
    app.router.add_post("/", _compat)
    app.router.add_get("/info", _info)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app
