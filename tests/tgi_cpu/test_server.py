"""The TGI protocol over real HTTP on a loopback port, with the tiny model."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from tests.tgi_cpu.conftest import CTX, ServerFactory, chat

STORY = chat("Write a short story about a robot who learns to paint.")
COUNTING = "Count: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # greedy decoding keeps counting: no early end
TOKEN_KEYS = {"id", "text", "logprob", "special"}


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


async def sse(session: aiohttp.ClientSession, url: str, body: Any) -> list[dict[str, Any]]:
    async with session.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        return [json.loads(line[5:]) async for line in resp.content if line.startswith(b"data:")]


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(url + "/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def test_generate_speaks_tgi(tgi_server: ServerFactory) -> None:
    async with tgi_server() as url, aiohttp.ClientSession() as s:
        body = {"inputs": STORY, "parameters": {"max_new_tokens": 6, "details": True, "top_n_tokens": 3}}
        status, headers, out = await post(s, url + "/generate", body)
        assert status == 200, out
        details = out["details"]
        assert {"finish_reason", "generated_tokens", "seed", "prefill", "tokens", "top_tokens"} <= set(
            details
        )
        assert details["finish_reason"] == "length"
        assert details["generated_tokens"] == 6
        assert details["seed"] is None
        assert details["prefill"] == []
        assert all(set(t) == TOKEN_KEYS for t in details["tokens"])
        assert [len(top) for top in details["top_tokens"]] == [3] * 6
        assert out["generated_text"] == "".join(t["text"] for t in details["tokens"])
        assert headers["x-generated-tokens"] == "6"
        assert headers["x-prompt-tokens"] == str(details["input_length"])

        status, _, plain = await post(
            s, url + "/generate", {"inputs": STORY, "parameters": {"max_new_tokens": 6}}
        )
        assert status == 200
        assert set(plain) == {"generated_text"}
        assert plain["generated_text"] == out["generated_text"]

        full = {"inputs": STORY, "parameters": {"max_new_tokens": 6, "return_full_text": True}}
        _, _, whole = await post(s, url + "/generate", full)
        assert whole["generated_text"] == STORY + out["generated_text"]

        prefill = {
            "inputs": STORY,
            "parameters": {"max_new_tokens": 1, "details": True, "decoder_input_details": True},
        }
        _, _, with_prefill = await post(s, url + "/generate", prefill)
        tokens = with_prefill["details"]["prefill"]
        assert len(tokens) == details["input_length"]
        assert tokens[0]["logprob"] is None
        assert all(set(t) == {"id", "text", "logprob"} for t in tokens)


async def test_stream_yields_the_same_tokens_as_generate(tgi_server: ServerFactory) -> None:
    params = {"max_new_tokens": 20, "details": True, "top_n_tokens": 2, "stop": ["\n\n"]}
    async with tgi_server() as url, aiohttp.ClientSession() as s:
        _, _, whole = await post(s, url + "/generate", {"inputs": STORY, "parameters": params})
        events = await sse(s, url + "/generate_stream", {"inputs": STORY, "parameters": params})
        # the compat route streams when the body says so
        compat = await sse(s, url + "/", {"inputs": STORY, "parameters": params, "stream": True})
    for stream in (events, compat):
        assert [e["index"] for e in stream] == list(range(1, len(stream) + 1))
        assert [e["token"] for e in stream] == whole["details"]["tokens"]
        assert [e["top_tokens"] for e in stream] == whole["details"]["top_tokens"]
        assert all(e["generated_text"] is None and e["details"] is None for e in stream[:-1])
        last = stream[-1]
        assert last["generated_text"] == whole["generated_text"]
        assert last["details"]["finish_reason"] == whole["details"]["finish_reason"]
        assert last["details"]["generated_tokens"] == len(stream)


async def test_compat_route_without_stream_returns_a_list(tgi_server: ServerFactory) -> None:
    async with tgi_server() as url, aiohttp.ClientSession() as s:
        status, _, out = await post(s, url + "/", {"inputs": STORY, "parameters": {"max_new_tokens": 3}})
        _, _, direct = await post(
            s, url + "/generate", {"inputs": STORY, "parameters": {"max_new_tokens": 3}}
        )
    assert status == 200
    assert out == [direct]


async def test_stop_sequences_and_finish_reasons(tgi_server: ServerFactory) -> None:
    async with tgi_server() as url, aiohttp.ClientSession() as s:
        _, _, free = await post(s, url + "/generate", {"inputs": STORY, "parameters": {"max_new_tokens": 30}})
        stop = free["generated_text"][20:24]
        body = {"inputs": STORY, "parameters": {"max_new_tokens": 30, "stop": [stop], "details": True}}
        _, _, stopped = await post(s, url + "/generate", body)
        assert stopped["details"]["finish_reason"] == "stop_sequence"
        assert stopped["generated_text"] == free["generated_text"][: free["generated_text"].index(stop)]
        body = {"inputs": chat("What is 2+2?"), "parameters": {"max_new_tokens": 50, "details": True}}
        _, _, eos = await post(s, url + "/generate", body)
        assert eos["details"]["finish_reason"] == "eos_token"
        assert eos["details"]["tokens"][-1]["special"] is True


async def test_seed_makes_sampling_reproducible(tgi_server: ServerFactory) -> None:
    params = {
        "max_new_tokens": 16,
        "do_sample": True,
        "temperature": 0.9,
        "top_p": 0.95,
        "seed": 77,
        "details": True,
    }
    async with tgi_server() as url, aiohttp.ClientSession() as s:
        _, _, a = await post(s, url + "/generate", {"inputs": STORY, "parameters": params})
        _, _, b = await post(s, url + "/generate", {"inputs": STORY, "parameters": params})
    assert a["details"]["seed"] == 77
    assert a["details"]["tokens"] == b["details"]["tokens"]


async def test_next_step_reuses_the_prefix_and_matches_a_cold_server(tgi_server: ServerFactory) -> None:
    params = {"max_new_tokens": 16, "details": True}
    async with tgi_server() as url, aiohttp.ClientSession() as s:
        _, _, step1 = await post(s, url + "/generate", {"inputs": STORY, "parameters": params})
        prompt2 = STORY + step1["generated_text"] + "\n\n"
        _, headers, warm = await post(s, url + "/generate", {"inputs": prompt2, "parameters": params})
    assert warm["details"]["cached_tokens"] > step1["details"]["input_length"] - 1
    assert headers["x-cached-tokens"] == str(warm["details"]["cached_tokens"])
    async with tgi_server() as url, aiohttp.ClientSession() as s:  # a new server starts with an empty cache
        _, _, cold = await post(s, url + "/generate", {"inputs": prompt2, "parameters": params})
    assert cold["details"]["cached_tokens"] == 0
    assert cold["details"]["tokens"] == warm["details"]["tokens"]


async def test_forced_tokens_replay_a_sampled_generation(tgi_server: ServerFactory) -> None:
    sampled_params = {"max_new_tokens": 12, "details": True, "temperature": 1.8, "seed": 5}
    async with tgi_server() as url, aiohttp.ClientSession() as s:
        _, _, sampled = await post(s, url + "/generate", {"inputs": STORY, "parameters": sampled_params})
        ids = [t["id"] for t in sampled["details"]["tokens"]]
        forced = {"max_new_tokens": 12, "details": True, "temperature": 0, "forced_tokens": ids}
        status, _, replay = await post(s, url + "/generate", {"inputs": STORY, "parameters": forced})
        streamed = await sse(s, url + "/generate_stream", {"inputs": STORY, "parameters": forced})
    assert status == 200, replay
    assert [t["id"] for t in replay["details"]["tokens"]] == ids
    assert replay["generated_text"] == sampled["generated_text"]
    assert replay["details"]["finish_reason"] == sampled["details"]["finish_reason"]
    assert [m["token"]["id"] for m in streamed] == ids


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "JSON"),
        ({"inputs": 3}, 422, "Expected `str`"),
        ({"inputs": "hi", "parameters": {"max_new_tokens": "many"}}, 422, "max_new_tokens"),
        ({"inputs": ""}, 422, "cannot be empty"),
        ({"inputs": "hi", "parameters": {"stop": ["a", "b", "c", "d", "e"]}}, 422, "up to 4 stop sequences"),
        ({"inputs": "hi", "parameters": {"top_n_tokens": 99}}, 422, "top_n_tokens"),
        ({"inputs": "hi", "parameters": {"top_p": 1.5}}, 422, "top_p"),
        ({"inputs": "hi", "parameters": {"max_new_tokens": 0}}, 422, "strictly positive"),
        ({"inputs": "word " * (CTX + 50)}, 422, "must have less than"),
        ({"inputs": "hi", "parameters": {"max_new_tokens": CTX}}, 422, "must be <="),
        ({"inputs": "hi", "parameters": {"repetition_penalty": 1.2}}, 422, "not supported"),
        ({"inputs": "hi", "parameters": {"forced_tokens": [-1]}}, 422, "forced_tokens"),
        (
            {"inputs": "hi", "parameters": {"forced_tokens": [1, 2, 3], "max_new_tokens": 2}},
            422,
            "forced_tokens",
        ),
    ],
)
async def test_bad_requests_get_tgi_json_errors(
    tgi_server: ServerFactory, body: Any, status: int, needle: str
) -> None:
    async with tgi_server() as url, aiohttp.ClientSession() as s:
        for route in ("/generate", "/generate_stream"):
            got, headers, out = await post(s, url + route, body)
            assert got == status, out
            assert headers["Content-Type"].startswith("application/json")
            assert out["error_type"] == "validation"
            assert needle in out["error"]


async def test_decoder_input_details_cannot_stream(tgi_server: ServerFactory) -> None:
    body = {"inputs": "hi", "parameters": {"decoder_input_details": True}}
    async with tgi_server() as url, aiohttp.ClientSession() as s:
        status, _, out = await post(s, url + "/generate_stream", body)
    assert status == 422
    assert "streaming" in out["error"]


async def test_scoring_call_ranks_the_likely_continuation_above_nonsense(tgi_server: ServerFactory) -> None:
    # The likelihood policy's scoring call (TgiBackend.score) on the real model: the LRM's view of a step.
    from trigreason.services.worker.backends import TgiBackend

    async with tgi_server() as url:
        backend = TgiBackend(url)
        try:
            likely = await backend.score(COUNTING, " 11, 12, 13,")
            nonsense = await backend.score(COUNTING, " banana purple sofa")
        finally:
            await backend.aclose()
    for read, text in ((likely, " 11, 12, 13,"), (nonsense, " banana purple sofa")):
        assert "".join(t.text for t in read.tokens).endswith(text)
        assert all(-100 < t.logprob <= 1e-6 for t in read.tokens)
    mean = [sum(t.logprob for t in r.tokens) / len(r.tokens) for r in (likely, nonsense)]
    assert mean[0] > -1.0 > mean[1], mean


async def test_full_queue_gets_429_and_a_gone_client_frees_the_engine(tgi_server: ServerFactory) -> None:
    busy = {"inputs": COUNTING, "parameters": {"max_new_tokens": CTX - 64}}
    quick = {"inputs": STORY, "parameters": {"max_new_tokens": 2}}
    async with tgi_server(max_queue=1, retry_after_s=3) as url, aiohttp.ClientSession() as s:
        holder = await s.post(url + "/generate_stream", json=busy)
        assert holder.status == 200
        await holder.content.readline()  # the first token arrived: the engine is busy with this request
        waiting = asyncio.create_task(post(s, url + "/generate", quick))
        deadline = time.monotonic() + 10
        while await metric(s, url, "trigreason_tgi_cpu_queue_depth") < 1:
            assert time.monotonic() < deadline, "the second request never queued"
            await asyncio.sleep(0.01)
        status, headers, out = await post(s, url + "/generate", quick)
        assert status == 429
        assert headers["Retry-After"] == "3"
        assert out == {"error": "Model is overloaded", "error_type": "overloaded"}

        holder.close()  # the client goes away mid-stream: its generation stops at the next token
        status, _, _ = await asyncio.wait_for(waiting, timeout=60)
        assert status == 200
        assert await metric(s, url, "trigreason_tgi_cpu_cancelled_generations_total") == 1


async def test_info_health_metrics_and_traceparent(tgi_server: ServerFactory) -> None:
    async with tgi_server() as url, aiohttp.ClientSession() as s:
        async with s.get(url + "/info") as resp:
            info = await resp.json()
        assert info["model_id"] == "tiny"
        assert info["max_input_tokens"] == CTX - 1
        assert info["max_total_tokens"] == CTX
        assert {"max_stop_sequences", "max_best_of", "max_concurrent_requests", "router", "version"} <= set(
            info
        )
        async with s.get(url + "/health") as resp:
            assert resp.status == 200
        headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        body = {"inputs": STORY, "parameters": {"max_new_tokens": 2}}
        async with s.post(url + "/generate", json=body, headers=headers) as resp:
            assert resp.status == 200
        assert await metric(s, url, "trigreason_tgi_cpu_generated_tokens_total") == 2
        assert info["cache_slots"] == 4
        # Seconds spent in prompt evaluation and in generation, summed over requests.
        assert await metric(s, url, "trigreason_tgi_cpu_prefill_seconds_sum") > 0
        assert await metric(s, url, "trigreason_tgi_cpu_decode_seconds_sum") > 0
        assert await metric(s, url, "trigreason_tgi_cpu_decode_seconds_count") == 1
        assert await metric(s, url, 'trigreason_tgi_cpu_requests_total{route="/generate",status="200"}') == 1
