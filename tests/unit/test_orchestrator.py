"""The orchestrator core driven by scripted steps: roles, triggers, accounting, termination, errors."""

from __future__ import annotations

import msgspec
import pytest

from tests.support import CONFIDENT, Trace, drive, scripted, step
from trigreason.proto import (
    DeadlineReached,
    GeneratedStep,
    GenerateStep,
    IllegalEvent,
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionRequested,
    SessionSnapshot,
    StaleEvent,
    StepCommitted,
    StepFailed,
    StepGenerated,
)
from trigreason.services.orchestrator import Output, decide, initial_state

Q = "What is 3 + 4?"
CALM = step("We add 3 and 4.")
FINAL = step("So the answer is \\boxed{7}.")
SURE = step("3 + 4 = 7.", [CONFIDENT] * 10)  # r_s = 1 > rho
HES = step("Wait, let me think.")


def roles(trace: Trace) -> list[tuple[str, str | None]]:
    return [(s.role, s.trigger) for s in trace.state.steps]


def finished(trace: Trace) -> SessionFinished:
    ends = [o for o in trace.outputs if isinstance(o, SessionFinished | SessionFailed)]
    assert len(ends) == 1
    assert isinstance(ends[0], SessionFinished)
    return ends[0]


def test_priming_then_srm_until_final_answer() -> None:
    trace = drive(Q, SessionParams(priming_steps=2), srm=scripted(CALM, FINAL), lrm=scripted("L0", "L1"))
    assert roles(trace) == [("lrm", "priming"), ("lrm", "priming"), ("srm", None), ("srm", None)]
    end = finished(trace)
    assert (end.answer, end.reason, end.steps) == ("7", "final_answer", 4)
    s = end.stats
    assert (s.lrm_tokens, s.srm_tokens, s.srm_wasted_tokens) == (8, 8, 0)
    assert s.srm_token_ratio == pytest.approx(0.5)
    assert s.triggers == {"priming": 1}
    assert (s.lrm_calls, s.srm_calls) == (2, 2)
    assert s.wall_s == pytest.approx(4.0)  # requested at 1.0, last step at 5.0


def test_offload_replaces_the_confident_step() -> None:
    trace = drive(Q, SessionParams(priming_steps=0), srm=scripted(SURE, FINAL), lrm=scripted("L-replacement"))
    assert roles(trace) == [("lrm", "offload"), ("srm", None)]
    assert trace.state.steps[0].text == "L-replacement"
    assert trace.discarded == ["3 + 4 = 7."]
    s = finished(trace).stats
    assert (s.srm_wasted_tokens, s.triggers) == (10, {"offload": 1})


def test_intervention_hands_m_steps_to_the_lrm_and_wins_over_offload() -> None:
    hes_and_sure = step("Wait, 3 + 4 = 7?", [CONFIDENT] * 6)
    params = SessionParams(priming_steps=0, k=2, m=2)
    trace = drive(Q, params, srm=scripted(HES, hes_and_sure, FINAL), lrm=scripted("L1", "L2"))
    assert roles(trace) == [("srm", None), ("lrm", "intervention"), ("lrm", "intervention"), ("srm", None)]
    s = finished(trace).stats
    assert s.triggers == {"intervention": 1}
    assert s.srm_wasted_tokens == 6


def test_hesitation_run_resets_after_an_lrm_step() -> None:
    # HES (run 1), offload (LRM writes, run resets), HES (run 1 again: no intervention), final.
    trace = drive(
        Q, SessionParams(priming_steps=0, k=2), srm=scripted(HES, SURE, HES, FINAL), lrm=scripted("L")
    )
    assert roles(trace) == [("srm", None), ("lrm", "offload"), ("srm", None), ("srm", None)]


@pytest.mark.parametrize(("score", "expected_role"), [(3, ("lrm", "judge_reject")), (8, ("srm", None))])
def test_specreason_judge(score: int, expected_role: tuple[str, str | None]) -> None:
    prompts: list[str] = []

    def judge(prompt: str) -> int:
        prompts.append(prompt)
        return score if len(prompts) == 1 else 9

    trace = drive(
        Q, SessionParams(policy="specreason"), srm=scripted(CALM, FINAL), lrm=scripted("L"), judge=judge
    )
    assert roles(trace)[0] == expected_role
    assert "We add 3 and 4." in prompts[0]
    assert Q in prompts[0]
    s = finished(trace).stats
    assert s.judge_calls == 2
    assert s.lrm_calls == 2 + (1 if score == 3 else 0)


def test_lrm_only_and_srm_only() -> None:
    lrm_trace = drive(Q, SessionParams(policy="lrm-only"), srm=scripted(), lrm=scripted(CALM, FINAL))
    assert roles(lrm_trace) == [("lrm", None), ("lrm", None)]
    srm_trace = drive(
        Q, SessionParams(policy="srm-only"), srm=scripted(SURE, HES, HES, FINAL), lrm=scripted()
    )
    assert [r for r, _ in roles(srm_trace)] == ["srm"] * 4
    assert finished(srm_trace).stats.srm_token_ratio == 1.0


def test_token_budget_caps_each_step_and_is_never_exceeded() -> None:
    seen: list[int] = []

    def srm(cmd: GenerateStep) -> GeneratedStep:
        seen.append(cmd.max_new_tokens)
        return step("more", n=min(4, cmd.max_new_tokens))

    trace = drive(
        Q, SessionParams(policy="srm-only", max_tokens=10, step_max_tokens=4), srm=srm, lrm=scripted()
    )
    end = finished(trace)
    assert end.reason == "token_budget"
    assert seen == [4, 4, 2]
    assert end.stats.srm_tokens == 10


def test_step_cap_and_eos() -> None:
    capped = drive(Q, SessionParams(policy="srm-only", max_steps=3), srm=scripted(then=CALM), lrm=scripted())
    assert (finished(capped).reason, len(capped.state.steps)) == ("step_cap", 3)
    eos = drive(
        Q,
        SessionParams(policy="srm-only"),
        srm=scripted(CALM, step("done", finish="eos_token")),
        lrm=scripted(),
    )
    assert (finished(eos).reason, finished(eos).answer) == ("eos", None)


def test_blank_steps_are_retried_then_stall() -> None:
    blank = step("  ")
    trace = drive(
        Q, SessionParams(policy="srm-only"), srm=scripted(blank, CALM, blank, blank, blank), lrm=scripted()
    )
    assert finished(trace).reason == "stalled"
    assert [s.text for s in trace.state.steps] == ["We add 3 and 4."]


def test_commands_have_deterministic_ids_and_carry_the_trigger_context() -> None:
    state, out = decide(
        initial_state("abc"),
        SessionRequested(session_id="abc", question=Q, params=SessionParams(priming_steps=1)),
    )
    (timer, cmd) = out
    assert timer == DeadlineReached(session_id="abc", deadline_at=3600.0)  # requested at 0, default 3600 s
    assert isinstance(cmd, GenerateStep)
    assert (cmd.command_id, cmd.role, cmd.trigger, cmd.context) == ("abc.0.0.lrm", "lrm", "priming", None)
    assert Q in cmd.prompt
    assert cmd.prompt.endswith("<|im_start|>assistant\n")
    state2, out2 = decide(
        initial_state("abc"),
        SessionRequested(session_id="abc", question=Q, params=SessionParams(priming_steps=1)),
    )
    assert state2 == state
    assert out2 == out


def _started(params: SessionParams | None = None) -> tuple[SessionSnapshot, tuple[Output, ...]]:
    state, (timer, cmd) = decide(
        initial_state("s"),
        SessionRequested(
            session_id="s", question=Q, params=params or SessionParams(priming_steps=1), requested_at=10.0
        ),
    )
    assert isinstance(timer, DeadlineReached)
    return state, (cmd,)


def test_illegal_event_raises_and_leaves_state_untouched() -> None:
    state, (cmd,) = _started()
    assert isinstance(cmd, GenerateStep)
    before = msgspec.json.encode(state)
    with pytest.raises(IllegalEvent) as info:
        decide(state, SessionRequested(session_id="s", question=Q))
    assert not info.value.retryable
    assert msgspec.json.encode(state) == before
    with pytest.raises(IllegalEvent):  # an SRM step never reaches the orchestrator directly
        decide(
            state,
            StepGenerated(session_id="s", command_id=cmd.command_id, step_index=0, role="srm", step=CALM),
        )


def test_duplicate_delivery_is_stale() -> None:
    state, (cmd,) = _started()
    assert isinstance(cmd, GenerateStep)
    ev = StepGenerated(session_id="s", command_id=cmd.command_id, step_index=0, role="lrm", step=CALM)
    state2, out = decide(state, ev)
    assert isinstance(out[0], StepCommitted)
    with pytest.raises(StaleEvent):
        decide(state2, ev)


def test_backend_failure_fails_the_session_once() -> None:
    state, (cmd,) = _started()
    assert isinstance(cmd, GenerateStep)
    failed, out = decide(
        state,
        StepFailed(
            session_id="s",
            command_id=cmd.command_id,
            step_index=0,
            role="lrm",
            code="backend_error",
            message="boom",
        ),
    )
    assert failed.phase == "failed"
    assert [type(o) for o in out] == [SessionFailed]
    with pytest.raises(IllegalEvent):
        decide(
            failed,
            StepFailed(
                session_id="s", command_id=cmd.command_id, step_index=0, role="lrm", code="x", message="y"
            ),
        )
