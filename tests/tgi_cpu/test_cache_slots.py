"""Several sessions' prefixes in one K/V cache (``cache_slots``): interleaved sessions keep their caches,
the least-recently-used slot goes first, a full cache drops other slots, and outputs stay those of a cold
engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tgi_cpu.conftest import BATCH, CTX, THREADS, chat
from trigreason.proto import ConfigError
from trigreason.services.tgi_cpu import (
    Generation,
    InputValidationError,
    LlamaEngine,
    SamplingParams,
    TgiCpuSettings,
)

PARAMS = SamplingParams(max_new_tokens=12, top_n_tokens=2)
A = chat("Write a short story about a robot who learns to paint.")
B = chat("Explain why the sky is blue in two sentences.")
C = chat("List three uses of a paperclip.")
SYSTEM = (
    "<|im_start|>system\nYou are a careful assistant. Think step by step, check each step, and answer "
    "briefly. Never guess: say so when you do not know.<|im_end|>\n"
)


def engine_with(model: Path, slots: int, ctx: int = CTX) -> LlamaEngine:
    return LlamaEngine(model, n_ctx=ctx, n_threads=THREADS, n_batch=BATCH, cache_slots=slots)


@pytest.fixture(scope="module")
def two_slots(tiny_model: Path) -> Iterator[LlamaEngine]:
    eng = engine_with(tiny_model, 2)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def one_slot(tiny_model: Path) -> Iterator[LlamaEngine]:
    eng = engine_with(tiny_model, 1)
    yield eng
    eng.close()


def next_step(prompt: str, gen: Generation) -> str:
    return prompt + gen.text + "\n\n"


def assert_same_as_cold(cold: LlamaEngine, prompt: str, warm: Generation, *, exact: bool = True) -> None:
    cold.reset_cache()
    ref = cold.generate(prompt, PARAMS)
    assert ref.cached_tokens == 0
    assert [t.id for t in warm.tokens] == [t.id for t in ref.tokens]
    if exact:  # bit-identical, as with one slot (see BATCH in conftest)
        assert [t.logprob for t in warm.tokens] == [t.logprob for t in ref.tokens]
        assert warm.top_tokens == ref.top_tokens


def test_interleaved_sessions_keep_their_prefixes(two_slots: LlamaEngine, one_slot: LlamaEngine) -> None:
    two_slots.reset_cache()
    a1 = two_slots.generate(A, PARAMS)
    b1 = two_slots.generate(B, PARAMS)
    a2 = two_slots.generate(next_step(A, a1), PARAMS)
    b2 = two_slots.generate(next_step(B, b1), PARAMS)
    assert a2.cached_tokens >= a1.input_length
    assert b2.cached_tokens >= b1.input_length
    assert two_slots.cached_tokens == sum(two_slots.slot_tokens) >= a2.input_length + b2.input_length
    assert_same_as_cold(one_slot, next_step(A, a1), a2)
    assert_same_as_cold(one_slot, next_step(B, b1), b2)


def test_one_slot_keeps_only_the_last_session(one_slot: LlamaEngine) -> None:
    one_slot.reset_cache()
    a1 = one_slot.generate(A, PARAMS)
    one_slot.generate(B, PARAMS)
    a2 = one_slot.generate(next_step(A, a1), PARAMS)
    # Only the chat template's opening is shared with B's prompt.
    assert 0 < a2.cached_tokens < a1.input_length // 2
    assert one_slot.slot_tokens == (a2.input_length + len(a2.tokens) - 1,)


def test_the_least_recently_used_session_is_evicted(two_slots: LlamaEngine) -> None:
    two_slots.reset_cache()
    a1 = two_slots.generate(A, PARAMS)
    b1 = two_slots.generate(B, PARAMS)
    c1 = two_slots.generate(C, PARAMS)  # takes A's slot: A was used least recently
    b2 = two_slots.generate(next_step(B, b1), PARAMS)
    c2 = two_slots.generate(next_step(C, c1), PARAMS)
    a2 = two_slots.generate(next_step(A, a1), PARAMS)  # takes B's slot now
    assert b2.cached_tokens >= b1.input_length
    assert c2.cached_tokens >= c1.input_length
    assert a2.cached_tokens < a1.input_length // 2
    b3 = two_slots.generate(next_step(B, b1), PARAMS)
    assert b3.cached_tokens < b1.input_length // 2


def test_a_shared_prefix_is_reused_without_taking_the_other_sessions_slot(
    two_slots: LlamaEngine, one_slot: LlamaEngine
) -> None:
    """B shares a long system prompt with A but is another session: it gets A's prefix K/V as a shared
    copy in the other slot, and A keeps its own."""
    first, second = SYSTEM + A, SYSTEM + B
    system_tokens = len(two_slots.tokenize(SYSTEM))
    two_slots.reset_cache()
    a1 = two_slots.generate(first, PARAMS)
    b1 = two_slots.generate(second, PARAMS)
    assert b1.cached_tokens >= system_tokens
    a2 = two_slots.generate(next_step(first, a1), PARAMS)
    b2 = two_slots.generate(next_step(second, b1), PARAMS)
    assert a2.cached_tokens >= a1.input_length
    assert b2.cached_tokens >= b1.input_length
    assert_same_as_cold(one_slot, second, b1)
    assert_same_as_cold(one_slot, next_step(second, b1), b2)


def test_a_full_cache_evicts_other_slots_and_still_answers(tiny_model: Path, one_slot: LlamaEngine) -> None:
    """Three slots in a 256-token cache: the third session's prompt does not fit beside the other two."""
    eng = engine_with(tiny_model, 3, ctx=256)
    try:
        filler = " Remember each detail of this request and answer with care." * 8
        prompts = [
            chat(q + filler) for q in ("Describe a red apple.", "Describe a blue lake.", "Describe a cat.")
        ]
        assert all(len(eng.tokenize(p)) > 90 for p in prompts)  # three of them (and answers) overfill
        gens = [eng.generate(p, PARAMS) for p in prompts]
        assert eng.evictions >= 1
        assert eng.slot_tokens.count(0) >= 1  # the first session's slot was dropped
        assert sum(eng.slot_tokens) <= eng.n_ctx
        again = eng.generate(next_step(prompts[2], gens[2]), PARAMS)  # the newest session kept its prefix
        assert again.cached_tokens >= gens[2].input_length
        for prompt, gen in zip(prompts, gens, strict=True):
            # Cells freed by an eviction are reused out of position order, which may change the last
            # bits of a logprob: the tokens are the same.
            assert_same_as_cold(one_slot, prompt, gen, exact=False)
    finally:
        eng.close()


def test_cache_slots_setting() -> None:
    assert TgiCpuSettings().cache_slots == 4
    assert TgiCpuSettings.from_env({"TRIGREASON_TGI_CPU_CACHE_SLOTS": "2"}).cache_slots == 2
    with pytest.raises(ConfigError, match="cache_slots"):
        TgiCpuSettings(cache_slots=0)


def test_cache_slots_out_of_range_is_refused(tiny_model: Path) -> None:
    with pytest.raises(InputValidationError, match="cache_slots"):
        engine_with(tiny_model, 0)
