"""The load simulator: the TGI contract over real HTTP, and its own knobs (determinism, step lengths,
log-probabilities, hesitations, answers, latency, errors, concurrency)."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from typer.testing import CliRunner

from trigreason.cli import app
from trigreason.proto import DEFAULT_HESITATION, BackendError, ConfigError
from trigreason.services.backend_sim import SimParams, SimSettings, Simulator, StepLength
from trigreason.services.trigger_evaluator import hesitates
from trigreason.services.worker.backends import GenerationRequest, TgiBackend

from .contract import ContractServer, TgiContract
from .support import fast_retries, serve_sim


class TestBackendSimContract(TgiContract):
    @pytest.fixture
    async def contract_server(self) -> AsyncIterator[ContractServer]:
        async with serve_sim() as url:
            # No language here: a step ends at its blank line, which uniform:20..60 steps reach in time.
            yield ContractServer(url=url, stop_prompt="Question: x?", stop="\n\n", stop_within=70)


def _sim(**overrides: object) -> Simulator:
    return Simulator(SimSettings(**overrides))  # type: ignore[arg-type]


def test_same_seed_same_tokens_other_seed_other_tokens() -> None:
    params = SimParams(max_new_tokens=50, stop=("\n\n",))
    a = _sim(seed=3).generate("Question: 1+1?", params)
    assert a == _sim(seed=3).generate("Question: 1+1?", params)
    assert a != _sim(seed=4).generate("Question: 1+1?", params)
    assert a != _sim(seed=3).generate("Question: 1+1?", SimParams(max_new_tokens=50, stop=("\n\n",), seed=9))


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [("7", 7, 7), ("fixed:12", 12, 12), ("uniform:3..9", 3, 9), ("normal:10,3", 1, 10**6)],
)
def test_step_length_distribution(spec: str, low: int, high: int) -> None:
    sim = _sim(step_tokens=StepLength.parse(spec), hesitation_p=0.0)
    lengths = []
    for i in range(200):
        gen = sim.generate(f"prompt {i}", SimParams(max_new_tokens=500, stop=("\n\n",)))
        assert gen.finish_reason == "stop_sequence"
        lengths.append(len(gen.tokens) - 1)  # the last token is the blank line
    assert low <= min(lengths)
    assert max(lengths) <= high
    if spec.startswith("uniform"):
        assert set(lengths) == set(range(3, 10))
    if spec.startswith("normal"):
        assert 9 < statistics.mean(lengths) < 11


def test_step_length_rejects_nonsense() -> None:
    for spec in ("", "uniform:9..3", "normal:abc", "fixed:0", "poisson:3"):
        with pytest.raises(ConfigError):
            StepLength.parse(spec)


def test_logprob_mixture() -> None:
    confident = _sim(confident_p=1.0, confident_width=0.02).generate("p", SimParams(max_new_tokens=400))
    assert all(-0.02 <= t.logprob <= 0 for t in confident.tokens)
    unsure = _sim(confident_p=0.0, uncertain_rate=2.0).generate("p", SimParams(max_new_tokens=2000))
    assert statistics.mean(t.logprob for t in unsure.tokens) == pytest.approx(-0.5, abs=0.05)
    mixed = _sim(confident_p=0.7).generate("p", SimParams(max_new_tokens=2000))
    share = sum(t.logprob >= -0.02 for t in mixed.tokens) / len(mixed.tokens)
    assert 0.65 < share < 0.78  # confident ones plus the few uncertain ones that land near 0


def test_hesitation_words_start_steps() -> None:
    sim = _sim(hesitation_p=1.0)
    for i in range(20):
        text = sim.generate(f"q{i}", SimParams(max_new_tokens=200, stop=("\n\n",))).text
        assert text.split(",")[0] in ("Wait", "Hmm", "Alternatively", "Actually")
        assert hesitates(text, DEFAULT_HESITATION)
    never = _sim(hesitation_p=0.0).generate("q", SimParams(max_new_tokens=200, stop=("\n\n",))).text
    assert not hesitates(never, DEFAULT_HESITATION)


def test_final_answer_after_n_steps() -> None:
    sim = _sim(answer_after=2, answer_p=1.0, step_tokens=StepLength.parse("5"))
    params = SimParams(max_new_tokens=100, stop=("\n\n",))
    early = sim.generate("Question: q\n\nstep one", params)
    assert early.finish_reason == "stop_sequence"
    assert "boxed" not in early.text
    late = sim.generate("Question: q\n\nstep one\n\nstep two\n\n", params)
    assert late.finish_reason == "eos_token"
    assert late.tokens[-1].special
    assert re.search(r"\\boxed\{\d+\}\.$", late.text)
    # Every step of one question names the same answer.
    later = sim.generate("Question: q\n\nstep one\n\nstep two\n\nstep three\n\n", params)
    assert re.findall(r"\d+", late.text)[-1] == re.findall(r"\d+", later.text)[-1]


async def test_time_per_token_and_prefill() -> None:
    async with serve_sim(time_per_token_ms=10.0, prefill_ms=50.0) as url:
        backend = TgiBackend(url)
        try:
            gen = await backend.generate(GenerationRequest(prompt="q", max_new_tokens=10, stop=()))
        finally:
            await backend.aclose()
    assert gen.step.tokens == 10
    assert gen.timings.backend_s >= 0.15


async def test_one_request_at_a_time_the_rest_wait() -> None:
    async with serve_sim(time_per_token_ms=10.0, concurrency=1) as url:
        backend = TgiBackend(url)
        request = GenerationRequest(prompt="q", max_new_tokens=10, stop=())
        try:
            started = time.perf_counter()
            results = await asyncio.gather(*(backend.generate(request) for _ in range(3)))
            elapsed = time.perf_counter() - started
        finally:
            await backend.aclose()
    assert all(r.step.tokens == 10 for r in results)
    assert elapsed >= 0.29  # three 100 ms generations, one after another


async def test_injected_errors_are_retried_then_given_up() -> None:
    async with serve_sim(error_rate=1.0) as url:
        backend = TgiBackend(url, settings=fast_retries(max_attempts=3))
        try:
            with pytest.raises(BackendError) as caught:
                await backend.generate(GenerationRequest(prompt="q", max_new_tokens=4))
        finally:
            await backend.aclose()
        async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
            metrics = await resp.text()
    assert caught.value.retryable is True
    assert caught.value.code == "backend_server_error"
    assert "gave up after 3 attempts" in caught.value.message
    assert 'backend_sim_requests_total{route="/generate",status="500"} 3.0' in metrics
    assert "backend_sim_injected_errors_total 3.0" in metrics


async def test_error_rate_is_deterministic_per_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        async with serve_sim(error_rate=0.5, seed=seed) as url, aiohttp.ClientSession() as http:
            out = []
            for _ in range(20):
                async with http.post(url + "/generate", json={"inputs": "q"}) as resp:
                    out.append(resp.status)
            return out

    first = await statuses(1)
    assert first == await statuses(1)
    assert 3 <= first.count(500) <= 17


async def test_timeout_is_retryable() -> None:
    async with serve_sim(time_per_token_ms=100.0) as url:
        backend = TgiBackend(url, settings=fast_retries(timeout_s=0.2, max_attempts=1))
        try:
            with pytest.raises(BackendError) as caught:
                await backend.generate(GenerationRequest(prompt="q", max_new_tokens=20))
        finally:
            await backend.aclose()
    assert caught.value.retryable is True
    assert caught.value.code == "backend_timeout"


def test_settings_from_env() -> None:
    env = {
        "TRIGREASON_SIM_STEP_TOKENS": "normal:40,10",
        "TRIGREASON_SIM_TIME_PER_TOKEN_MS": "3.5",
        "TRIGREASON_SIM_CONCURRENCY": "4",
        "TRIGREASON_SIM_HESITATION_WORDS": "Wait, Hmm",
    }
    s = SimSettings.from_env(env, concurrency=2, seed=None, step_tokens="uniform:1..2")
    assert s.step_tokens == StepLength("uniform", 1, 2)
    assert s.time_per_token_ms == 3.5
    assert s.concurrency == 2
    assert s.hesitation_words == ("Wait", "Hmm")
    with pytest.raises(ConfigError):
        SimSettings.from_env({"TRIGREASON_SIM_ERROR_RATE": "2"})
    with pytest.raises(ConfigError):
        SimSettings.from_env({"TRIGREASON_SIM_CONCURRENCY": "many"})


def test_cli_registers_backend_sim() -> None:
    result = CliRunner().invoke(app, ["serve", "backend-sim", "--help"])
    assert result.exit_code == 0
    assert "--time-per-token-ms" in result.output
    bad = CliRunner().invoke(app, ["serve", "backend-sim", "--step-tokens", "uniform:9..3"])
    assert bad.exit_code == 2


async def test_forced_tokens_are_refused_not_ignored() -> None:
    # A simulator draws its tokens from a distribution and has no vocabulary to force: tgi-cpu only.
    body = {"inputs": "q", "parameters": {"max_new_tokens": 4, "forced_tokens": [1, 2]}}
    async with (
        serve_sim() as url,
        aiohttp.ClientSession() as http,
        http.post(f"{url}/generate", json=body) as resp,
    ):
        status, out = resp.status, await resp.json()
    assert status == 422
    assert "`forced_tokens` is not supported" in out["error"]
