"""The OpenAI-compatible adapter: against llama.cpp's own server (llama-cpp-python[server]) on the tiny
model, and against canned vLLM / SGLang / llama.cpp response shapes for what llama.cpp does not send."""

from __future__ import annotations

import math
from typing import Any

import pytest
from aiohttp import web

from trigreason.proto import BackendError
from trigreason.services.worker.backends import (
    BackendSettings,
    GenerationRequest,
    OpenAIBackend,
    make_backend,
)

from .support import serve_app

_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_COUNT = "Count: 1, 2, 3, 4,"
_CHAT = "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"


def _settings() -> BackendSettings:
    return BackendSettings(timeout_s=120.0, max_attempts=1)


# --- a real server -------------------------------------------------------------------------------------


async def test_llama_cpp_generate_length(llama_cpp_server: str) -> None:
    backend = await make_backend(llama_cpp_server, settings=_settings())
    assert isinstance(backend, OpenAIBackend)  # /info is 404, /v1/models answers
    try:
        gen = await backend.generate(
            GenerationRequest(prompt=_COUNT, max_new_tokens=4, stop=(), temperature=0)
        )
    finally:
        await backend.aclose()
    step = gen.step
    assert step.finish_reason == "length"
    assert len(step.token_texts) == len(step.token_logprobs) == 4
    assert step.token_ids == ()  # llama.cpp's server does not send them
    assert all(math.isfinite(lp) and lp <= 1e-6 for lp in step.token_logprobs)
    assert "".join(step.token_texts).startswith(step.text)
    assert gen.timings.prompt_tokens > 0
    assert gen.timings.backend_s > 0


async def test_llama_cpp_stop_sequence(llama_cpp_server: str) -> None:
    backend = OpenAIBackend(llama_cpp_server, settings=_settings())
    try:
        gen = await backend.generate(
            GenerationRequest(prompt=_COUNT, max_new_tokens=16, stop=(",",), temperature=0)
        )
    finally:
        await backend.aclose()
    step = gen.step
    assert step.finish_reason == "stop_sequence"
    assert "," not in step.text
    assert "," in "".join(step.token_texts)
    assert step.text.strip() == "5"


async def test_llama_cpp_eos_or_stop(llama_cpp_server: str) -> None:
    backend = OpenAIBackend(llama_cpp_server, settings=_settings())
    try:
        gen = await backend.generate(
            GenerationRequest(prompt=_CHAT, max_new_tokens=120, stop=("\n\n",), temperature=0)
        )
    finally:
        await backend.aclose()
    # The model ends its reply either with a blank line (our stop string) or with EOS; the adapter must
    # tell which from the sampled tokens, since llama.cpp's server says only "stop" for both.
    step = gen.step
    assert step.tokens < 120
    tail = "".join(step.token_texts)[len(step.text) :]
    if "\n\n" in tail:
        assert step.finish_reason == "stop_sequence", step
    else:
        assert step.finish_reason == "eos_token", step


async def test_llama_cpp_seed_and_judge(llama_cpp_server: str) -> None:
    backend = OpenAIBackend(llama_cpp_server, settings=_settings())
    request = GenerationRequest(prompt=_COUNT, max_new_tokens=6, stop=(), temperature=0.9, seed=42)
    try:
        first = await backend.generate(request)
        second = await backend.generate(request)
        judged = await backend.judge("Rate this step from 0 to 9. Score:", top_n=5)
    finally:
        await backend.aclose()
    assert first.step == second.step
    top = [c.logprob for c in judged.top_logprobs]
    assert len(top) == 5
    assert top == sorted(top, reverse=True)
    assert all(math.isfinite(lp) and lp <= 1e-6 for lp in top)


# --- canned response shapes ----------------------------------------------------------------------------


def _completion(text: str, tokens: list[str], finish: str, **choice: Any) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "served-model",
        "choices": [
            {
                "index": 0,
                "text": text,
                "finish_reason": finish,
                "logprobs": {
                    "tokens": tokens,
                    "token_logprobs": [-0.5] * len(tokens),
                    "top_logprobs": [{t: -0.5} for t in tokens],
                    "text_offset": list(range(len(tokens))),
                },
                **choice,
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": len(tokens), "total_tokens": 7 + len(tokens)},
    }


class _Fake:
    """An OpenAI-compatible app that answers canned completions in turn and records request bodies."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_post("/v1/completions", self._complete)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "served-model", "object": "model"}]})

    async def _complete(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        return web.json_response(self.answers.pop(0))


async def _generate(fake: _Fake, request: GenerationRequest, **settings: Any) -> Any:
    async with serve_app(fake.app) as url:
        backend = OpenAIBackend(url + "/v1", settings=BackendSettings(**settings))
        try:
            return await backend.generate(request)
        finally:
            await backend.aclose()


async def test_request_body_model_and_trace_context() -> None:
    fake = _Fake(_completion(" 5", [" 5", ","], "stop"))
    request = GenerationRequest(
        prompt=_COUNT, stop=(",",), seed=3, headers={"traceparent": _TRACEPARENT, "cookie": "x"}
    )
    gen = await _generate(fake, request)
    body = fake.bodies[0]
    assert body["model"] == "served-model"  # the server's first model, as none was configured
    assert body["prompt"] == _COUNT
    assert body["max_tokens"] == 512
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"]) == (0.6, 0.95, 3, [","])
    assert body["logprobs"] == 1
    assert "return_token_ids" not in body
    assert fake.headers[0]["traceparent"] == _TRACEPARENT
    assert "cookie" not in fake.headers[0]
    assert gen.step.finish_reason == "stop_sequence"  # llama.cpp style: the stop string lies past the text
    assert gen.timings.prompt_tokens == 7


async def test_vllm_stop_reason_token_ids_and_cached_tokens() -> None:
    stopped = _completion(" 5", [" 5", ","], "stop", stop_reason=",", token_ids=[220, 11])
    stopped["usage"]["prompt_tokens_details"] = {"cached_tokens": 4}
    fake = _Fake(stopped)
    gen = await _generate(fake, GenerationRequest(prompt="p", stop=(",",)), openai_token_ids=True, model="m")
    assert fake.bodies[0]["return_token_ids"] is True
    assert fake.bodies[0]["model"] == "m"
    assert gen.step.finish_reason == "stop_sequence"
    assert gen.step.token_ids == (220, 11)
    assert gen.timings.cached_prompt_tokens == 4

    eos = await _generate(
        _Fake(_completion(" 5.", [" 5", "."], "stop", stop_reason=None)), GenerationRequest(prompt="p")
    )
    assert eos.step.finish_reason == "eos_token"


async def test_sglang_matched_stop() -> None:
    by_token = await _generate(
        _Fake(_completion(" 5", [" 5"], "stop", matched_stop=2)), GenerationRequest(prompt="p", stop=(",",))
    )
    assert by_token.step.finish_reason == "eos_token"
    by_string = await _generate(
        _Fake(_completion(" 5", [" 5", ","], "stop", matched_stop=",")),
        GenerationRequest(prompt="p", stop=(",",)),
    )
    assert by_string.step.finish_reason == "stop_sequence"


async def test_llama_cpp_shape_eos_length_and_kept_stop() -> None:
    eos = await _generate(_Fake(_completion(" 5.", [" 5", "."], "stop")), GenerationRequest(prompt="p"))
    assert eos.step.finish_reason == "eos_token"
    length = await _generate(
        _Fake(_completion(" 5, 6", [" 5", ",", " 6"], "length")), GenerationRequest(prompt="p")
    )
    assert length.step.finish_reason == "length"
    assert length.step.text == " 5, 6"
    kept = await _generate(
        _Fake(_completion(" 5\n\n", [" 5", "\n\n"], "stop")), GenerationRequest(prompt="p", stop=("\n\n",))
    )
    assert kept.step.finish_reason == "stop_sequence"
    assert kept.step.text == " 5"


async def test_judge_sorts_and_trims_top_logprobs() -> None:
    answer = _completion("8", ["8"], "length")
    # llama.cpp adds the sampled token to the top-n, so there may be one more than asked for.
    answer["choices"][0]["logprobs"]["top_logprobs"] = [{"7": -1.5, "8": -0.3, "9": -2.0, " 8": -4.0}]
    fake = _Fake(answer)
    async with serve_app(fake.app) as url:
        backend = OpenAIBackend(url)
        try:
            judged = await backend.judge("Score:", top_n=3, headers={"traceparent": _TRACEPARENT})
        finally:
            await backend.aclose()
    assert [(c.text, c.logprob) for c in judged.top_logprobs] == [("8", -0.3), ("7", -1.5), ("9", -2.0)]
    assert fake.bodies[0]["max_tokens"] == 1
    assert fake.bodies[0]["logprobs"] == 3
    assert fake.headers[0]["traceparent"] == _TRACEPARENT


async def test_missing_logprobs_is_a_bad_response() -> None:
    answer = _completion(" 5", [" 5"], "length")
    answer["choices"][0]["logprobs"] = None
    with pytest.raises(BackendError) as caught:
        await _generate(_Fake(answer), GenerationRequest(prompt="p"))
    assert caught.value.code == "backend_bad_response"
    assert caught.value.retryable is False


async def test_score_through_echo_with_prompt_logprobs() -> None:
    # vLLM's shape: echo puts the prompt's tokens (the first without a log-probability) before the one
    # generated token.
    answer = _completion("Q: We add 3.", ["Q", ":", " We", " add", " 3"], "length")
    answer["choices"][0]["logprobs"]["token_logprobs"] = [None, -1.0, -0.2, -0.4, -0.5]
    fake = _Fake(answer)
    async with serve_app(fake.app) as url:
        backend = OpenAIBackend(url)
        try:
            read = await backend.score("Q:", " We add")
        finally:
            await backend.aclose()
    assert [(t.text, t.logprob) for t in read.tokens] == [(" We", -0.2), (" add", -0.4)]
    body = fake.bodies[0]
    assert (body["prompt"], body["echo"], body["max_tokens"], body["logprobs"]) == ("Q: We add", True, 1, 1)
    assert read.timings.prompt_tokens == 7


async def test_score_echo_without_the_generated_token_and_a_wrong_echo() -> None:
    # llama-cpp-python's server echoes the prompt's tokens without the generated one.
    answer = _completion("Q: We add 3.", ["Q", ":", " We", " add"], "length")
    answer["choices"][0]["logprobs"]["token_logprobs"] = [None, -1.0, -0.2, -0.4]
    wrong = _completion("Q: We add 3.", ["Q", ";", " We", " add", " 3"], "length")
    fake = _Fake(answer, wrong)
    async with serve_app(fake.app) as url:
        backend = OpenAIBackend(url)
        try:
            read = await backend.score("Q:", " We add")
            with pytest.raises(BackendError) as caught:
                await backend.score("Q:", " We add")
        finally:
            await backend.aclose()
    assert [(t.text, t.logprob) for t in read.tokens] == [(" We", -0.2), (" add", -0.4)]
    assert caught.value.code == "backend_unsupported"
    assert "do not spell the prompt" in caught.value.message


async def test_score_without_echo_is_a_clear_error() -> None:
    # llama.cpp's server ignores echo: only the generated token comes back.
    fake = _Fake(_completion(" 3", [" 3"], "length"))
    async with serve_app(fake.app) as url:
        backend = OpenAIBackend(url)
        try:
            with pytest.raises(BackendError) as caught:
                await backend.score("Q:", " We add")
        finally:
            await backend.aclose()
    assert caught.value.code == "backend_unsupported"
    assert caught.value.retryable is False
    assert "echo" in caught.value.message
