"""Properties of the orchestrator state machine over random sessions (hypothesis)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from tests.support import Trace, drive
from trigreason.proto import (
    FinishReason,
    GeneratedStep,
    GenerateStep,
    SessionFailed,
    SessionFinished,
    SessionParams,
    StepCommitted,
)
from trigreason.services.orchestrator import Output, decide, initial_state

params_strategy = st.builds(
    SessionParams,
    policy=st.sampled_from(["trigreason", "specreason", "lrm-only", "srm-only"]),
    priming_steps=st.integers(0, 4),
    tau=st.sampled_from([1.01, 1.05, 1.5]),
    rho=st.sampled_from([0.0, 0.5, 0.85, 1.0]),
    k=st.integers(1, 3),
    m=st.integers(1, 3),
    max_tokens=st.integers(1, 60),
    max_steps=st.integers(1, 15),
    step_max_tokens=st.integers(1, 8),
    judge_threshold=st.sampled_from([0.0, 5.0, 7.0, 9.0]),
)

TEXTS = [
    "We add the numbers.",
    "Wait, check again.",
    "Hmm, alternatively.",
    "So \\boxed{4}.",
    "  ",
    "Actually no.",
]
LOGPROBS = [0.0, -0.001, -0.3, -2.0]
FINISH: list[FinishReason] = [*(["stop_sequence"] * 8), "eos_token", "length"]  # type: ignore[list-item]


def _stepper(data: st.DataObject, role: str, tags: itertools.count[int]) -> object:
    def make(cmd: GenerateStep) -> GeneratedStep:
        text = data.draw(st.sampled_from(TEXTS), label=f"{role} text")
        n = data.draw(st.integers(0, cmd.max_new_tokens), label=f"{role} tokens")
        lps = tuple(data.draw(st.lists(st.sampled_from(LOGPROBS), min_size=n, max_size=n)))
        finish: FinishReason = data.draw(st.sampled_from(FINISH))
        if text.strip():
            text = f"{text} #{role}{next(tags)}"  # unique, so a discarded step can be recognised
        return GeneratedStep(
            text=text,
            token_ids=tuple(range(n)),
            token_texts=("t",) * n,
            token_logprobs=lps,
            finish_reason=finish,
        )

    return make


def _run(data: st.DataObject, params: SessionParams) -> Trace:
    tags = itertools.count()
    return drive(
        "What is 2 + 2?",
        params,
        srm=_stepper(data, "srm", tags),  # type: ignore[arg-type]
        lrm=_stepper(data, "lrm", tags),  # type: ignore[arg-type]
        judge=lambda _p: data.draw(st.integers(0, 9), label="judge score"),
    )


@given(data=st.data(), params=params_strategy)
def test_session_invariants(data: st.DataObject, params: SessionParams) -> None:
    trace = _run(data, params)
    steps = trace.state.steps
    committed = [o for o in trace.outputs if isinstance(o, StepCommitted)]

    # Every session ends in exactly one terminal event, and it is the last output.
    ends = [o for o in trace.outputs if isinstance(o, SessionFinished | SessionFailed)]
    assert len(ends) == 1
    assert trace.outputs[-1] is ends[0]
    assert trace.state.phase in ("finished", "failed")

    # Committed step indices are contiguous from 0, in the snapshot and in the published events alike.
    assert [s.index for s in steps] == list(range(len(steps)))
    assert [(c.index, c.text) for c in committed] == [(s.index, s.text) for s in steps]

    # No discarded step ever appears in the committed trajectory.
    # (Non-blank texts are unique per generated step; blank ones cannot be told apart.)
    assert not {t for t in trace.discarded if t.strip()} & {s.text for s in steps}

    # Priming steps are all LRM.
    if params.policy == "trigreason":
        assert isinstance(params.priming_steps, int)  # v1 flat, as the strategy builds them
        for s in steps[: params.priming_steps]:
            assert (s.role, s.trigger) == ("lrm", "priming")
    if params.policy == "lrm-only":
        assert all(s.role == "lrm" for s in steps)
    if params.policy == "srm-only":
        assert all(s.role == "srm" for s in steps)

    # The token budget is never exceeded by more than one step (here: not at all, steps are capped).
    total = sum(s.tokens for s in steps)
    assert total <= params.max_tokens
    assert len(steps) <= params.max_steps

    # The accounting adds up.
    stats = ends[0].stats
    assert stats.srm_tokens == sum(s.tokens for s in steps if s.role == "srm")
    assert stats.lrm_tokens == sum(s.tokens for s in steps if s.role == "lrm")
    if total:
        assert abs(stats.srm_token_ratio - stats.srm_tokens / total) < 1e-12


@given(data=st.data(), params=params_strategy)
def test_replaying_the_same_events_gives_the_same_state(data: st.DataObject, params: SessionParams) -> None:
    trace = _run(data, params)
    state = initial_state("s1")
    outputs: list[Output] = []
    for event in trace.events:
        state, out = decide(state, event)
        outputs.extend(out)
    assert state == trace.state
    assert outputs == trace.outputs
