"""The adapters' HTTP behaviour against tiny servers that misbehave on purpose: retries and backoff,
Retry-After, errors that say whether to retry, timeouts, trace headers, protocol detection."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from trigreason.proto import BackendError, ConfigError
from trigreason.services.worker.backends import (
    BackendSettings,
    GenerationRequest,
    OpenAIBackend,
    TgiBackend,
    detect_protocol,
    make_backend,
)

from .support import fast_retries, serve_app

_TGI_OK = {
    "generated_text": " 5",
    "details": {
        "finish_reason": "stop_sequence",
        "generated_tokens": 2,
        "seed": None,
        "prefill": [],
        "tokens": [
            {"id": 220, "text": " 5", "logprob": -0.25, "special": False},
            {"id": 11, "text": ",", "logprob": -0.01, "special": False},
        ],
    },
}
_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _flaky(
    failures: list[Callable[[], web.Response]], ok: dict[str, Any]
) -> tuple[web.Application, list[web.Request]]:
    """An app whose /generate answers the given failures in turn, then ``ok``; it records each request."""
    seen: list[web.Request] = []

    async def generate(request: web.Request) -> web.Response:
        seen.append(request)
        if len(seen) <= len(failures):
            return failures[len(seen) - 1]()
        return web.json_response(ok, headers={"x-prompt-tokens": "6"})

    app = web.Application()
    app.router.add_post("/generate", generate)
    return app, seen


def _err(status: int, message: str = "boom", **headers: str) -> Callable[[], web.Response]:
    return lambda: web.json_response({"error": message, "error_type": "test"}, status=status, headers=headers)


async def test_retries_5xx_then_succeeds() -> None:
    app, seen = _flaky([_err(503), _err(500), _err(502)], _TGI_OK)
    async with serve_app(app) as url:
        backend = TgiBackend(url, settings=fast_retries(max_attempts=4))
        try:
            gen = await backend.generate(GenerationRequest(prompt="Count: 1, 2, 3, 4,", stop=(",",)))
        finally:
            await backend.aclose()
    assert len(seen) == 4
    assert gen.step.text == " 5"  # real TGI keeps the stop sequence in the text; the adapter drops it
    assert gen.step.finish_reason == "stop_sequence"
    assert gen.step.token_ids == (220, 11)
    assert gen.step.token_texts == (" 5", ",")
    assert gen.step.token_logprobs == (-0.25, -0.01)
    assert gen.timings.prompt_tokens == 6  # from TGI's x-prompt-tokens header
    assert gen.timings.backend_s > 0


async def test_gives_up_after_max_attempts_with_a_retryable_error() -> None:
    app, seen = _flaky([_err(500, "CUDA out of memory")] * 10, _TGI_OK)
    async with serve_app(app) as url:
        backend = TgiBackend(url, settings=fast_retries(max_attempts=3))
        try:
            with pytest.raises(BackendError) as caught:
                await backend.generate(GenerationRequest(prompt="p"))
        finally:
            await backend.aclose()
    assert len(seen) == 3
    assert caught.value.retryable is True
    assert caught.value.code == "backend_server_error"
    assert "CUDA out of memory" in caught.value.message
    assert "gave up after 3 attempts" in caught.value.message


async def test_429_honours_retry_after() -> None:
    app, seen = _flaky([_err(429, "Model is overloaded", **{"Retry-After": "1"})], _TGI_OK)
    # Backoff alone would retry at once: only Retry-After can explain a one-second wait.
    async with serve_app(app) as url:
        backend = TgiBackend(url, settings=fast_retries(backoff_base_s=0.0, backoff_max_s=0.0))
        try:
            started = time.perf_counter()
            await backend.generate(GenerationRequest(prompt="p"))
            elapsed = time.perf_counter() - started
        finally:
            await backend.aclose()
    assert len(seen) == 2
    assert elapsed >= 0.95


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
async def test_4xx_raises_at_once_not_retryable(status: int) -> None:
    app, seen = _flaky(
        [_err(status, "Input validation error: `inputs` must have less than 4096 tokens")], _TGI_OK
    )
    async with serve_app(app) as url:
        backend = TgiBackend(url, settings=fast_retries(max_attempts=5))
        try:
            with pytest.raises(BackendError) as caught:
                await backend.generate(GenerationRequest(prompt="p"))
        finally:
            await backend.aclose()
    assert len(seen) == 1
    assert caught.value.retryable is False
    assert caught.value.code == "request_refused"
    assert "must have less than 4096 tokens" in caught.value.message


async def test_timeout_is_retried_then_retryable() -> None:
    calls = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await request.read()
        await asyncio.sleep(5)
        return web.json_response(_TGI_OK)

    app = web.Application()
    app.router.add_post("/generate", slow)
    async with serve_app(app) as url:
        backend = TgiBackend(url, settings=fast_retries(timeout_s=0.2, max_attempts=2))
        try:
            with pytest.raises(BackendError) as caught:
                await backend.generate(GenerationRequest(prompt="p"))
        finally:
            await backend.aclose()
    assert calls == 2
    assert caught.value.retryable is True
    assert caught.value.code == "backend_timeout"


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = TgiBackend(f"http://127.0.0.1:{port}", settings=fast_retries(max_attempts=2))
    try:
        with pytest.raises(BackendError) as caught:
            await backend.generate(GenerationRequest(prompt="p"))
    finally:
        await backend.aclose()
    assert caught.value.retryable is True
    assert caught.value.code == "backend_unavailable"


async def test_trace_context_forwarded_and_nothing_else() -> None:
    app, seen = _flaky([], _TGI_OK)
    async with serve_app(app) as url:
        backend = TgiBackend(url, settings=BackendSettings(api_key="sekret"))
        try:
            await backend.generate(
                GenerationRequest(
                    prompt="p",
                    headers={"TraceParent": _TRACEPARENT, "tracestate": "vendor=1", "x-session": "s1"},
                )
            )
        finally:
            await backend.aclose()
    headers = seen[0].headers
    assert headers["traceparent"] == _TRACEPARENT
    assert headers["tracestate"] == "vendor=1"
    assert "x-session" not in headers
    assert headers["Authorization"] == "Bearer sekret"


async def test_tgi_request_body_and_judge() -> None:
    bodies: list[dict[str, Any]] = []
    judge_ok = {
        "generated_text": "8",
        "details": {
            "finish_reason": "length",
            "generated_tokens": 1,
            "prefill": [],
            "tokens": [{"id": 23, "text": "8", "logprob": -0.4, "special": False}],
            "top_tokens": [
                [
                    {"id": 22, "text": "7", "logprob": -1.6, "special": False},
                    {"id": 23, "text": "8", "logprob": -0.4, "special": False},
                    {"id": 24, "text": "9", "logprob": -2.5, "special": False},
                ]
            ],
        },
    }

    async def generate(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        assert request.headers.get("traceparent") == _TRACEPARENT
        return web.json_response(judge_ok if len(bodies) == 1 else _TGI_OK)

    app = web.Application()
    app.router.add_post("/generate", generate)
    async with serve_app(app) as url:
        backend = TgiBackend(url)
        try:
            judged = await backend.judge("Score:", top_n=3, headers={"traceparent": _TRACEPARENT})
            await backend.generate(
                GenerationRequest(prompt="p", seed=5, stop=("\n\n",), headers={"traceparent": _TRACEPARENT})
            )
            await backend.generate(
                GenerationRequest(
                    prompt="p", temperature=0.0, top_p=1.0, headers={"traceparent": _TRACEPARENT}
                )
            )
        finally:
            await backend.aclose()
    assert [(c.text, c.logprob) for c in judged.top_logprobs] == [("8", -0.4), ("7", -1.6), ("9", -2.5)]
    judge_params = bodies[0]["parameters"]
    assert judge_params["max_new_tokens"] == 1
    assert judge_params["top_n_tokens"] == 3
    assert judge_params["details"] is True
    assert judge_params["decoder_input_details"] is False
    sampled = bodies[1]["parameters"]
    assert sampled["do_sample"] is True
    assert sampled["temperature"] == 0.6
    assert sampled["top_p"] == 0.95
    assert sampled["seed"] == 5
    assert sampled["stop"] == ["\n\n"]
    assert sampled["details"] is True
    greedy = bodies[2]["parameters"]  # TGI rejects temperature 0 and top_p 1: greedy is do_sample false
    assert greedy["do_sample"] is False
    assert "temperature" not in greedy
    assert "top_p" not in greedy


async def test_malformed_body_is_not_retryable() -> None:
    app, seen = _flaky([], {"generated_text": "x"})  # no details: not a TGI answer to details=true
    async with serve_app(app) as url:
        backend = TgiBackend(url, settings=fast_retries())
        try:
            with pytest.raises(BackendError) as caught:
                await backend.generate(GenerationRequest(prompt="p"))
        finally:
            await backend.aclose()
    assert len(seen) == 1
    assert caught.value.retryable is False
    assert caught.value.code == "backend_bad_response"


def _protocol_app(*, info: bool, models: bool) -> web.Application:
    async def get_info(request: web.Request) -> web.Response:
        return web.json_response({"model_id": "m", "max_total_tokens": 10})

    async def get_models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application()
    if info:
        app.router.add_get("/info", get_info)
    if models:
        app.router.add_get("/v1/models", get_models)
    return app


async def test_make_backend_detects_the_protocol() -> None:
    async with serve_app(_protocol_app(info=True, models=True)) as url:
        assert await detect_protocol(url) == "tgi"  # TGI serves /v1/models too; /info decides
        backend = await make_backend(url)
        assert isinstance(backend, TgiBackend)
        await backend.aclose()
    async with serve_app(_protocol_app(info=False, models=True)) as url:
        backend = await make_backend(url)
        assert isinstance(backend, OpenAIBackend)
        assert backend.base_url == url
        await backend.aclose()
        backend = await make_backend(url + "/v1/", protocol="auto")
        assert isinstance(backend, OpenAIBackend)
        assert backend.base_url == url
        await backend.aclose()
    async with serve_app(_protocol_app(info=False, models=False)) as url:
        with pytest.raises(BackendError) as caught:
            await make_backend(url)
        assert caught.value.retryable is False
        assert caught.value.code == "backend_unknown_protocol"
        forced = await make_backend(url, protocol="openai")
        assert isinstance(forced, OpenAIBackend)
        await forced.aclose()


async def test_make_backend_unreachable_or_bad_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BackendError) as caught:
        await make_backend(f"http://127.0.0.1:{port}")
    assert caught.value.retryable is True
    with pytest.raises(ConfigError):
        await make_backend("localhost:8080")


def test_settings_from_env() -> None:
    env = {
        "TRIGREASON_BACKEND_TIMEOUT_S": "12.5",
        "TRIGREASON_BACKEND_MAX_ATTEMPTS": "2",
        "TRIGREASON_BACKEND_MODEL": "qwen",
        "TRIGREASON_BACKEND_OPENAI_TOKEN_IDS": "true",
    }
    s = BackendSettings.from_env(env, max_attempts=None, api_key="sekret")
    assert (s.timeout_s, s.max_attempts, s.model, s.openai_token_ids) == (12.5, 2, "qwen", True)
    assert s.api_key == "sekret"
    assert "sekret" not in repr(s)
    with pytest.raises(ConfigError):
        BackendSettings.from_env({"TRIGREASON_BACKEND_MAX_ATTEMPTS": "0"})
    with pytest.raises(ConfigError):
        BackendSettings.from_env({"TRIGREASON_BACKEND_TIMEOUT_S": "soon"})
    with pytest.raises(ConfigError):
        BackendSettings.from_env({}, retries=3)
