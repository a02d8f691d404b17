"""The contract every TGI-protocol server of this project keeps (backend-sim, tgi-cpu), checked through
``TgiBackend`` and raw HTTP on a real port.

Plug a server in by subclassing ``TgiContract`` in a ``test_*.py`` module and giving it a
``contract_server`` fixture (any scope) that returns a ``ContractServer``, e.g. for tgi-cpu::

    class TestTgiCpuContract(TgiContract):
        @pytest.fixture
        async def contract_server(self, tgi_server: ServerFactory) -> AsyncIterator[ContractServer]:
            async with tgi_server() as url:
                yield ContractServer(url=url)

The prompts of ``ContractServer`` suit a real model (greedy counting); a server that is not a model says
which prompt and stop string end a step for it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from trigreason.proto import BackendError
from trigreason.services.worker.backends import BackendSettings, GenerationRequest, TgiBackend, make_backend

__all__ = ["ContractServer", "TgiContract"]

_FINISH = {"length", "eos_token", "stop_sequence"}


@dataclass(frozen=True, kw_only=True)
class ContractServer:
    url: str
    # Greedy decoding of ``prompt`` goes on for at least 4 tokens without EOS or a stop string.
    prompt: str = "Count: 1, 2, 3, 4,"
    # Greedy decoding of ``stop_prompt`` produces ``stop`` within ``stop_within`` tokens.
    stop_prompt: str = "Count: 1, 2, 3, 4,"
    stop: str = ","
    stop_within: int = 16


def _settings() -> BackendSettings:
    return BackendSettings(timeout_s=120.0, max_attempts=1)


async def _sse(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    events = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data:"):
            events.append(json.loads(line[len("data:") :]))
    return events


class TgiContract:
    """Tests every TGI-protocol server passes; the subclass provides ``contract_server``."""

    async def test_health_info_metrics(self, contract_server: ContractServer) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(contract_server.url + "/health") as resp:
                assert resp.status == 200
            async with http.get(contract_server.url + "/info") as resp:
                assert resp.status == 200
                info = await resp.json()
            async with http.get(contract_server.url + "/metrics") as resp:
                assert resp.status == 200
                assert "# TYPE" in await resp.text()
        assert isinstance(info["model_id"], str)
        assert info["model_id"]
        assert info["max_total_tokens"] > 0
        backend = await make_backend(contract_server.url, settings=_settings())
        try:
            assert isinstance(backend, TgiBackend)
        finally:
            await backend.aclose()

    async def test_generate_step_is_consistent(self, contract_server: ContractServer) -> None:
        backend = TgiBackend(contract_server.url, settings=_settings())
        try:
            gen = await backend.generate(
                GenerationRequest(prompt=contract_server.prompt, max_new_tokens=12, stop=("\n\n",), seed=7)
            )
        finally:
            await backend.aclose()
        step = gen.step
        assert 1 <= len(step.token_ids) <= 12
        assert len(step.token_ids) == len(step.token_texts) == len(step.token_logprobs)
        assert all(math.isfinite(lp) and lp <= 1e-6 for lp in step.token_logprobs)
        assert step.finish_reason in _FINISH
        assert "".join(step.token_texts).startswith(step.text)
        assert "\n\n" not in step.text
        assert gen.timings.backend_s > 0
        assert gen.timings.prompt_tokens > 0

    async def test_length_finish(self, contract_server: ContractServer) -> None:
        backend = TgiBackend(contract_server.url, settings=_settings())
        try:
            gen = await backend.generate(
                GenerationRequest(prompt=contract_server.prompt, max_new_tokens=4, stop=(), temperature=0.0)
            )
        finally:
            await backend.aclose()
        assert gen.step.finish_reason == "length"
        assert gen.step.tokens == 4

    async def test_stop_sequence_finish(self, contract_server: ContractServer) -> None:
        stop = contract_server.stop
        backend = TgiBackend(contract_server.url, settings=_settings())
        try:
            gen = await backend.generate(
                GenerationRequest(
                    prompt=contract_server.stop_prompt,
                    max_new_tokens=contract_server.stop_within,
                    stop=(stop,),
                    temperature=0.0,
                )
            )
        finally:
            await backend.aclose()
        step = gen.step
        assert step.finish_reason == "stop_sequence"
        assert stop not in step.text  # the step ends before the stop sequence
        assert stop in "".join(step.token_texts)  # which was sampled all the same
        assert "".join(step.token_texts).startswith(step.text)

    async def test_same_seed_same_step(self, contract_server: ContractServer) -> None:
        request = GenerationRequest(
            prompt=contract_server.prompt, max_new_tokens=8, stop=(), temperature=0.9, seed=1234
        )
        backend = TgiBackend(contract_server.url, settings=_settings())
        try:
            first = await backend.generate(request)
            second = await backend.generate(request)
        finally:
            await backend.aclose()
        assert first.step == second.step

    async def test_judge_top_n(self, contract_server: ContractServer) -> None:
        backend = TgiBackend(contract_server.url, settings=_settings())
        try:
            judged = await backend.judge("Rate this step from 0 to 9. Score:", top_n=5)
        finally:
            await backend.aclose()
        top = judged.top_logprobs
        assert len(top) == 5
        logprobs = [c.logprob for c in top]
        assert logprobs == sorted(logprobs, reverse=True)
        assert all(math.isfinite(lp) and lp <= 1e-6 for lp in logprobs)
        assert sum(math.exp(lp) for lp in logprobs) <= 1.0 + 1e-3

    async def test_score_reads_the_continuation_tokens(self, contract_server: ContractServer) -> None:
        # The likelihood policy's scoring call: decoder_input_details with one new token.
        continuation = " 5, 6,"
        backend = TgiBackend(contract_server.url, settings=_settings())
        try:
            read = await backend.score(contract_server.prompt, continuation)
        finally:
            await backend.aclose()
        assert read.tokens, "no continuation tokens"
        text = "".join(t.text for t in read.tokens)
        assert text.endswith(continuation)
        assert len(text) < len(continuation) + len(contract_server.prompt)
        assert all(math.isfinite(t.logprob) and t.logprob <= 1e-6 for t in read.tokens)
        assert read.timings.prompt_tokens > len(read.tokens)

    async def test_invalid_request_is_not_retryable(self, contract_server: ContractServer) -> None:
        backend = TgiBackend(contract_server.url, settings=BackendSettings(max_attempts=3))
        try:
            with pytest.raises(BackendError) as caught:
                await backend.generate(GenerationRequest(prompt=contract_server.prompt, max_new_tokens=0))
        finally:
            await backend.aclose()
        assert caught.value.retryable is False
        assert caught.value.code == "request_refused"
        assert "422" in caught.value.message

    async def test_stream_matches_generate(self, contract_server: ContractServer) -> None:
        params = {"max_new_tokens": 5, "do_sample": False, "details": True, "stop": []}
        body = {"inputs": contract_server.prompt, "parameters": params}
        async with aiohttp.ClientSession() as http:
            async with http.post(contract_server.url + "/generate", json=body) as resp:
                assert resp.status == 200
                whole = await resp.json()
            async with http.post(contract_server.url + "/generate_stream", json=body) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                events = await _sse(resp)
            async with http.post(contract_server.url + "/", json=body) as resp:
                assert resp.status == 200
                compat = await resp.json()
            async with http.post(contract_server.url + "/", json={**body, "stream": True}) as resp:
                assert resp.status == 200
                compat_events = await _sse(resp)
        tokens = whole["details"]["tokens"]
        assert [e["index"] for e in events] == list(range(1, len(tokens) + 1))
        assert [e["token"]["id"] for e in events] == [t["id"] for t in tokens]
        assert all(e["generated_text"] is None for e in events[:-1])
        assert events[-1]["generated_text"] == whole["generated_text"]
        assert events[-1]["details"]["finish_reason"] == whole["details"]["finish_reason"] == "length"
        assert isinstance(compat, list)
        assert compat[0]["generated_text"] == whole["generated_text"]
        assert [e["token"]["id"] for e in compat_events] == [t["id"] for t in tokens]
