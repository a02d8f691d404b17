"""The engine against llama.cpp itself: logprobs, sampling, stop sequences, prefix reuse, cancellation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tgi_cpu.conftest import BATCH, CTX, THREADS, chat
from trigreason.services.tgi_cpu import (
    GenerationCancelled,
    InputValidationError,
    LlamaEngine,
    SamplingParams,
    StreamToken,
)

STORY = chat("Write a short story about a robot who learns to paint.")
MATH = chat("What is 2+2?")


@pytest.fixture(scope="module")
def reference(tiny_model: Path) -> Iterator[Any]:
    """llama-cpp-python with the engine's context settings (logits for every position, which its own
    logprobs path needs)."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(tiny_model),
        n_ctx=CTX,
        n_threads=THREADS,
        logits_all=True,
        flash_attn=True,
        verbose=False,
    )
    yield llm
    llm.close()


def reference_logprobs(
    reference: Any, prompt_tokens: list[int], generated: list[int]
) -> np.ndarray[Any, Any]:
    """Log-probability of each generated token by ``Llama.logits_to_logprobs`` over ``Llama.scores``,
    decoding one token at a time after the prompt, as generation does."""
    reference.reset()
    reference.eval(prompt_tokens)
    for token in generated[:-1]:
        reference.eval([token])
    n = len(prompt_tokens)
    rows = reference.scores[n - 1 : n - 1 + len(generated)]
    logprobs = reference.logits_to_logprobs(rows)
    return np.asarray(logprobs[np.arange(len(generated)), generated], dtype=np.float64)


def test_greedy_is_deterministic_cold_and_warm(engine: LlamaEngine) -> None:
    params = SamplingParams(max_new_tokens=24)
    engine.reset_cache()
    cold = engine.generate(STORY, params)
    warm = engine.generate(STORY, params)  # whole prompt cached: only its last token is decoded again
    assert warm.cached_tokens == warm.input_length - 1
    assert [t.id for t in warm.tokens] == [t.id for t in cold.tokens]
    assert warm.text == cold.text
    assert cold.seed is None
    assert cold.finish_reason == "length"


def test_greedy_logprobs_equal_llama_cpp_completion(engine: LlamaEngine, reference: Any) -> None:
    engine.reset_cache()
    gen = engine.generate(STORY, SamplingParams(max_new_tokens=32))
    reference.reset()
    out = reference.create_completion(STORY, max_tokens=32, temperature=0.0, logprobs=1)
    ref = out["choices"][0]["logprobs"]
    assert "".join(ref["tokens"]) == gen.text
    np.testing.assert_allclose([t.logprob for t in gen.tokens], ref["token_logprobs"], atol=1e-4, rtol=0)


def test_sampled_logprobs_equal_llama_cpp_scores(engine: LlamaEngine, reference: Any) -> None:
    engine.reset_cache()
    gen = engine.generate(STORY, SamplingParams(max_new_tokens=40, temperature=0.9, top_p=0.95, seed=11))
    ids = [t.id for t in gen.tokens]
    expected = reference_logprobs(reference, engine.tokenize(STORY), ids)
    np.testing.assert_allclose([t.logprob for t in gen.tokens], expected, atol=1e-4, rtol=0)


def test_prompt_logprobs_equal_llama_cpp_scores(engine: LlamaEngine, reference: Any) -> None:
    gen = engine.generate(MATH, SamplingParams(max_new_tokens=2, decoder_input_details=True))
    tokens = engine.tokenize(MATH)
    assert [t.id for t in gen.prefill] == tokens
    assert gen.prefill[0].logprob is None
    assert gen.cached_tokens == 0
    reference.reset()
    reference.eval(tokens)
    logprobs = reference.logits_to_logprobs(reference.scores[: len(tokens) - 1])
    expected = logprobs[np.arange(len(tokens) - 1), tokens[1:]]
    mine = [np.nan if t.logprob is None else t.logprob for t in gen.prefill[1:]]
    np.testing.assert_allclose(mine, expected, atol=1e-4, rtol=0)


def test_prompt_logprobs_reuse_the_prefix_and_equal_a_cold_read(engine: LlamaEngine) -> None:
    # The likelihood policy's scoring calls: each reads the session so far plus a step. The prefix read
    # with logprobs before is reused (its logprobs kept), and the values equal a cold read.
    details = SamplingParams(max_new_tokens=1, decoder_input_details=True)
    longer = MATH + " Then we add the two numbers."
    engine.reset_cache()
    cold = engine.generate(longer, details)
    engine.reset_cache()
    engine.generate(MATH, details)
    warm = engine.generate(longer, details)
    assert warm.cached_tokens > 0
    assert [t.id for t in warm.prefill] == [t.id for t in cold.prefill]
    np.testing.assert_allclose(
        [np.nan if t.logprob is None else t.logprob for t in warm.prefill],
        [np.nan if t.logprob is None else t.logprob for t in cold.prefill],
        atol=1e-5,
        rtol=0,
    )
    again = engine.generate(longer, details)  # all of it cached: only the last token is evaluated
    assert again.cached_tokens == len(cold.prefill) - 1
    assert [t.logprob for t in again.prefill] == [t.logprob for t in warm.prefill]
    # A prefix read without logprobs has none to give: it is evaluated again.
    engine.reset_cache()
    engine.generate(MATH, SamplingParams(max_new_tokens=1))
    plain = engine.generate(longer, details)
    assert plain.cached_tokens == 0
    assert all(t.logprob is not None for t in plain.prefill[1:])


def test_prompt_logprobs_when_the_longer_read_retokenizes_the_prefix_end(engine: LlamaEngine) -> None:
    # A scoring call after another on the same session where the text read before ends in a token that
    # the longer text merges with what follows (Qwen's "." + "\n\n" -> ".\n\n"; the tiny model's
    # " tog" + "ether" -> " together"): the slot's position there holds another token, whose logprob it
    # knows. That position is evaluated again, and the values equal a cold read.
    details = SamplingParams(max_new_tokens=1, decoder_input_details=True)
    first = MATH + " We add them tog"
    longer = first + "ether to get 5."
    head, whole = engine.tokenize(first), engine.tokenize(longer)
    assert whole[: len(head)] != head, "precondition: the longer text retokenizes the end of the first"
    engine.reset_cache()
    cold = engine.generate(longer, details)
    engine.reset_cache()
    engine.generate(first, details)
    warm = engine.generate(longer, details)
    assert 0 < warm.cached_tokens < len(head)
    np.testing.assert_allclose(
        [np.nan if t.logprob is None else t.logprob for t in warm.prefill],
        [np.nan if t.logprob is None else t.logprob for t in cold.prefill],
        atol=1e-5,
        rtol=0,
    )


def test_seed_reproduces_a_sampled_run(engine: LlamaEngine) -> None:
    def run(seed: int) -> list[int]:
        gen = engine.generate(
            STORY, SamplingParams(max_new_tokens=30, temperature=1.0, do_sample=True, seed=seed)
        )
        assert gen.seed == seed
        return [t.id for t in gen.tokens]

    first = run(1234)
    assert run(1234) == first
    assert any(run(seed) != first for seed in (1, 2, 3))


def test_unseeded_sampling_reports_the_seed_it_drew(engine: LlamaEngine) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=0.8)
    gen = engine.generate(STORY, params)
    assert gen.seed is not None
    again = engine.generate(STORY, SamplingParams(max_new_tokens=12, temperature=0.8, seed=gen.seed))
    assert [t.id for t in again.tokens] == [t.id for t in gen.tokens]


def test_top_n_tokens_sorted_and_hold_the_sampled_token(engine: LlamaEngine) -> None:
    greedy = engine.generate(STORY, SamplingParams(max_new_tokens=8, top_n_tokens=5))
    for token, top in zip(greedy.tokens, greedy.top_tokens, strict=True):
        assert len(top) == 5
        logprobs = [t.logprob for t in top]
        assert logprobs == sorted(logprobs, reverse=True)
        assert top[0].id == token.id
        assert top[0].logprob == token.logprob
    # With top_k == top_n the sampled token is always among the top tokens.
    sampled = engine.generate(STORY, SamplingParams(max_new_tokens=30, top_k=20, top_n_tokens=20, seed=5))
    assert sampled.seed == 5
    for token, top in zip(sampled.tokens, sampled.top_tokens, strict=True):
        entry = next(t for t in top if t.id == token.id)
        assert entry.logprob == pytest.approx(token.logprob)
    assert any(top[0].id != token.id for token, top in zip(sampled.tokens, sampled.top_tokens, strict=True))


def test_finish_reasons(engine: LlamaEngine) -> None:
    eos = engine.generate(MATH, SamplingParams(max_new_tokens=40))
    assert eos.finish_reason == "eos_token"
    assert eos.tokens[-1].special
    assert eos.tokens[-1].text not in eos.text
    assert eos.text == "".join(t.text for t in eos.tokens if not t.special)

    length = engine.generate(STORY, SamplingParams(max_new_tokens=7))
    assert length.finish_reason == "length"
    assert len(length.tokens) == 7


def test_stop_sequence_ends_generation_and_is_left_out(engine: LlamaEngine) -> None:
    full = engine.generate(STORY, SamplingParams(max_new_tokens=40))
    # A stop sequence that spans a token boundary, taken from the middle of the greedy text.
    texts = [t.text for t in full.tokens]
    boundary = len("".join(texts[:10]))
    stop = full.text[boundary - 2 : boundary + 2]
    cut = full.text.index(stop)
    gen = engine.generate(STORY, SamplingParams(max_new_tokens=40, stop=("never appears", stop)))
    assert gen.finish_reason == "stop_sequence"
    assert gen.text == full.text[:cut]
    assert len(gen.tokens) < len(full.tokens)
    assert stop in "".join(t.text for t in gen.tokens)  # the tokens themselves are all reported


def test_prefix_reuse_matches_a_cold_engine(engine: LlamaEngine) -> None:
    """Five steps of a session: each prompt is the previous prompt plus its step; the prompts outgrow
    several prefill batches."""
    params = SamplingParams(max_new_tokens=24, top_n_tokens=3)
    engine.reset_cache()
    prompt = STORY
    warm_steps = []
    for _ in range(5):
        warm = engine.generate(prompt, params)
        warm_steps.append((prompt, warm))
        prompt = prompt + warm.text + "\n\n"
    assert warm_steps[-1][1].input_length > 3 * BATCH
    for (prompt, warm), (_, previous) in zip(warm_steps[1:], warm_steps, strict=False):
        # everything evaluated before is reused: the previous prompt and all but its last generated token
        assert warm.cached_tokens >= previous.input_length
        assert warm.cached_tokens < warm.input_length
        engine.reset_cache()
        cold = engine.generate(prompt, params)
        assert cold.cached_tokens == 0
        # Bit-identical, not merely close (see BATCH in conftest).
        assert [(t.id, t.logprob) for t in warm.tokens] == [(t.id, t.logprob) for t in cold.tokens]
        assert warm.top_tokens == cold.top_tokens


def test_prefix_reuse_can_be_turned_off(tiny_model: Path) -> None:
    eng = LlamaEngine(tiny_model, n_ctx=256, n_threads=THREADS, prefix_reuse=False)
    try:
        eng.generate(MATH, SamplingParams(max_new_tokens=2))
        assert eng.generate(MATH, SamplingParams(max_new_tokens=2)).cached_tokens == 0
    finally:
        eng.close()


def test_prompt_longer_than_the_context_is_refused(engine: LlamaEngine) -> None:
    long_prompt = "word " * (CTX + 10)
    with pytest.raises(InputValidationError, match="must have less than"):
        engine.generate(long_prompt, SamplingParams(max_new_tokens=1))
    fits = engine.tokenize("word " * (CTX // 2))
    with pytest.raises(InputValidationError, match=r"`inputs` tokens \+ `max_new_tokens` must be <="):
        engine.generate(fits, SamplingParams(max_new_tokens=CTX))


def test_cancel_stops_at_the_next_token_and_leaves_the_engine_usable(engine: LlamaEngine) -> None:
    cancel = threading.Event()
    seen: list[StreamToken] = []

    def on_token(tok: StreamToken) -> None:
        seen.append(tok)
        if len(seen) == 3:
            cancel.set()

    engine.reset_cache()
    with pytest.raises(GenerationCancelled):
        engine.generate(STORY, SamplingParams(max_new_tokens=200), cancel=cancel, on_token=on_token)
    assert len(seen) == 3
    after = engine.generate(STORY, SamplingParams(max_new_tokens=10))
    engine.reset_cache()
    cold = engine.generate(STORY, SamplingParams(max_new_tokens=10))
    assert [t.id for t in after.tokens] == [t.id for t in cold.tokens]
    assert [t.token.id for t in seen] == [t.id for t in cold.tokens[:3]]


def test_cancel_before_start_evaluates_nothing(engine: LlamaEngine) -> None:
    cancel = threading.Event()
    cancel.set()
    seen: list[StreamToken] = []
    engine.reset_cache()
    with pytest.raises(GenerationCancelled):
        engine.generate(STORY, SamplingParams(max_new_tokens=5), cancel=cancel, on_token=seen.append)
    assert seen == []
    assert engine.cached_tokens == 0


def test_forced_tokens_replay_a_generation_exactly_whatever_the_cache_holds(engine: LlamaEngine) -> None:
    # A sampled generation, so the forced tokens are not what greedy decoding would choose.
    engine.reset_cache()
    sampled = engine.generate(STORY, SamplingParams(max_new_tokens=20, temperature=1.8, seed=11))
    greedy = engine.generate(STORY, SamplingParams(max_new_tokens=20, temperature=0.0))
    ids = tuple(t.id for t in sampled.tokens)
    assert ids != tuple(t.id for t in greedy.tokens)
    engine.generate(MATH, SamplingParams(max_new_tokens=8))  # another prompt in the cache as well
    replay = engine.generate(STORY, SamplingParams(max_new_tokens=20, temperature=0.0, forced_tokens=ids))
    assert replay.cached_tokens > 0  # read from the cache this time, cold the first time
    assert tuple(t.id for t in replay.tokens) == ids
    assert replay.text == sampled.text
    assert replay.finish_reason == sampled.finish_reason
    # The logprobs are computed again, from the same logits: the model's own, as when sampling.
    np.testing.assert_allclose(
        [t.logprob for t in replay.tokens], [t.logprob for t in sampled.tokens], rtol=0, atol=1e-5
    )


def test_forced_tokens_are_a_prefix_then_generation_goes_on(engine: LlamaEngine) -> None:
    greedy = engine.generate(STORY, SamplingParams(max_new_tokens=12, temperature=0.0))
    forced = (engine.tokenize(" Once")[-1],)
    out = engine.generate(STORY, SamplingParams(max_new_tokens=12, temperature=0.0, forced_tokens=forced))
    assert out.tokens[0].id == forced[0]
    assert len(out.tokens) == 12
    # After the forced token the greedy continuation of the prompt plus that token.
    rest = engine.generate(
        engine.tokenize(STORY) + list(forced), SamplingParams(max_new_tokens=11, temperature=0.0)
    )
    assert [t.id for t in out.tokens[1:]] == [t.id for t in rest.tokens]
    assert [t.id for t in out.tokens] != [t.id for t in greedy.tokens]


def test_forced_tokens_are_checked(engine: LlamaEngine) -> None:
    with pytest.raises(InputValidationError, match="forced_tokens"):
        engine.generate(MATH, SamplingParams(max_new_tokens=4, forced_tokens=(engine.n_vocab,)))
    with pytest.raises(InputValidationError, match="at most `max_new_tokens`"):
        engine.generate(MATH, SamplingParams(max_new_tokens=2, forced_tokens=(1, 2, 3)))
