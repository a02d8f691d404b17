"""Every way a session can end early, on the pure core: judge failures, deadlines, dead letters, the
context bound, and the ``r_s`` edge cases that used to overflow. Plain, synchronous, table-driven."""

from __future__ import annotations

import asyncio
import math

import msgspec
import pytest

from tests.support import CONFIDENT, scripted, step
from trigreason.proto import (
    MAX_CONTEXT_BYTES,
    BackendError,
    BackendTimings,
    DeadlineReached,
    GenerateStep,
    JudgeStep,
    MessageDeadLettered,
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionRequested,
    SessionSnapshot,
    StaleEvent,
    StepCommitted,
    command_subject,
    event_subject,
    judge_command_id,
)
from trigreason.runner import run_session
from trigreason.services.orchestrator import decide, initial_state
from trigreason.services.trigger_evaluator import confident_share, evaluate
from trigreason.services.worker import step_failed, step_generated
from trigreason.services.worker.backends import (
    Backend,
    Generation,
    GenerationRequest,
    JudgeResult,
    ScoreResult,
)

Q = "What is 3 + 4?"


@pytest.mark.parametrize(
    ("logprobs", "expected"),
    [
        ([-9999.0, CONFIDENT], 0.5),  # vLLM's stand-in for log(0)
        ([-math.inf, CONFIDENT], 0.5),
        ([math.nan, CONFIDENT], 0.5),  # NaN is never confident
        ([-710.0, -1e308], 0.0),  # exp(-lp) would overflow here
        ([0.0, math.inf], 1.0),
    ],
)
def test_confident_share_never_overflows(logprobs: list[float], expected: float) -> None:
    assert confident_share(logprobs, 1.05) == expected


def test_confident_share_agrees_with_the_perplexity_definition() -> None:
    for lp in (-0.0487, -0.0488, -0.049, -0.01, -1.0, -1e-9):
        for tau in (1.05, 1.001, 2.0, 0.5):
            assert confident_share([lp], tau) == (1.0 if math.exp(-lp) < tau else 0.0), (lp, tau)


def _srm_command(policy: str = "specreason") -> tuple[SessionSnapshot, GenerateStep]:
    """A started session and its first command (an SRM step, or an LRM one under lrm-only)."""
    params = SessionParams(policy=policy, priming_steps=0)
    state, out = decide(
        initial_state("s"), SessionRequested(session_id="s", question=Q, params=params, requested_at=5.0)
    )
    (cmd,) = [o for o in out if isinstance(o, GenerateStep)]
    assert cmd.role == ("lrm" if policy == "lrm-only" else "srm")
    return state, cmd


def test_a_failed_judge_call_fails_the_session_it_judged() -> None:
    state, cmd = _srm_command()
    judge = evaluate(step_generated(cmd, step("We add."), BackendTimings(), at=6.0))
    assert isinstance(judge, JudgeStep)
    assert judge.command_id == judge_command_id(cmd.command_id)
    failed = step_failed(judge, code="request_refused", message="top_n 20 > 5", at=7.0)
    assert failed.role == "lrm"
    end_state, out = decide(state, failed)
    assert end_state.phase == "failed"
    (end,) = out
    assert isinstance(end, SessionFailed)
    assert end.code == "request_refused"
    assert "judge" in end.message
    with pytest.raises(StaleEvent):
        decide(end_state, failed)


def test_a_judge_failure_from_an_attempt_left_behind_is_stale() -> None:
    state, cmd = _srm_command()
    moved_on = msgspec.structs.replace(state, awaiting="s.0.1.srm", attempt=1)
    old_judge = msgspec.structs.replace(
        step_failed(cmd, code="x", message="y", at=1.0), command_id=judge_command_id(cmd.command_id)
    )
    with pytest.raises(StaleEvent):
        decide(moved_on, old_judge)


def test_deadline_fails_a_running_session_and_is_stale_after_the_end() -> None:
    state, _cmd = _srm_command("srm-only")
    timer = DeadlineReached(session_id="s", deadline_at=5.0 + 3600.0)
    failed, out = decide(state, timer)
    assert failed.phase == "failed"
    assert failed.end_reason == "deadline_exceeded"
    (end,) = out
    assert isinstance(end, SessionFailed)
    assert end.code == "deadline_exceeded"
    assert "3600 s" in end.message
    with pytest.raises(StaleEvent):
        decide(failed, timer)


def test_the_session_arms_its_deadline_from_the_request() -> None:
    params = SessionParams(deadline_s=90.0)
    _state, out = decide(
        initial_state("s"), SessionRequested(session_id="s", question=Q, params=params, requested_at=100.0)
    )
    assert DeadlineReached(session_id="s", deadline_at=190.0) in out


@pytest.mark.parametrize(
    ("command_id", "fails"),
    [
        (None, True),  # unreadable bytes that name the session
        ("s.0.0.srm", True),  # the command the session waits for
        ("s.0.0.srm.judge", True),  # its judge call
        ("s.0.7.srm", False),  # another attempt: left behind
    ],
)
def test_dead_letters_end_the_session_unless_left_behind(command_id: str | None, fails: bool) -> None:
    state, cmd = _srm_command("srm-only")
    assert cmd.command_id == "s.0.0.srm"
    notice = MessageDeadLettered(
        session_id="s", origin_subject=command_subject("srm"), reason="delivery limit", command_id=command_id
    )
    if not fails:
        with pytest.raises(StaleEvent):
            decide(state, notice)
        return
    _failed, (end,) = decide(state, notice)
    assert isinstance(end, SessionFailed)
    assert end.code == "dead_lettered"
    assert command_subject("srm") in end.message


def test_a_dead_lettered_request_fails_the_session_it_would_have_started() -> None:
    notice = MessageDeadLettered(session_id="s", origin_subject=event_subject("s", "requested"), reason="bad")
    failed, (end,) = decide(initial_state("s"), notice)
    assert failed.phase == "failed"
    assert isinstance(end, SessionFailed)


def test_a_dead_letter_for_a_session_that_never_started_is_stale() -> None:
    notice = MessageDeadLettered(
        session_id="s", origin_subject=event_subject("s", "verdict"), reason="garbage"
    )
    with pytest.raises(StaleEvent):
        decide(initial_state("s"), notice)


def test_answers_for_a_session_without_snapshot_are_stale() -> None:
    _state, cmd = _srm_command("lrm-only")
    generated = step_generated(cmd, step("x"), BackendTimings(), at=1.0)
    with pytest.raises(StaleEvent):
        decide(initial_state("s"), generated)


def test_a_session_that_reaches_the_context_bound_finishes_cleanly() -> None:
    params = SessionParams(policy="lrm-only", max_tokens=65_536, max_steps=100_000)
    state, out = decide(
        initial_state("s"), SessionRequested(session_id="s", question=Q, params=params, requested_at=0.0)
    )
    big = "x" * 4000
    lrm = scripted(*[big] * 200)
    for _ in range(200):
        (cmd,) = [o for o in out if isinstance(o, GenerateStep)]
        state, out = decide(state, step_generated(cmd, lrm(cmd), BackendTimings(), at=1.0))
        if state.phase == "finished":
            break
    (end,) = [o for o in out if isinstance(o, SessionFinished)]
    assert end.reason == "context_limit"
    context = len(Q) + sum(len(s.text) for s in state.steps)
    assert MAX_CONTEXT_BYTES <= context < MAX_CONTEXT_BYTES + len(big)
    # The largest message that session could produce still fits NATS' default max_payload (1 MiB).
    assert len(msgspec.json.encode(state)) < 1024 * 1024


class _RejectingJudge:
    """A real Backend implementation whose judge call fails, as stock TGI's does for top_n > 5."""

    name = "rejecting-judge"

    async def generate(self, request: GenerationRequest) -> Generation:
        return Generation(step=step("We add 3 and 4."), timings=BackendTimings())

    async def judge(
        self,
        prompt: str,
        *,
        top_n: int,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,
    ) -> JudgeResult:
        raise BackendError(f"top_n {top_n} > 5", code="request_refused")

    async def score(
        self,
        prompt: str,
        continuation: str,
        *,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,
    ) -> ScoreResult:
        raise BackendError("no prompt log-probabilities", code="backend_unsupported")

    async def aclose(self) -> None:
        return None


def test_runner_and_cluster_paths_agree_on_a_failed_judge() -> None:
    backend: Backend = _RejectingJudge()
    result = asyncio.run(
        run_session(
            Q,
            SessionParams(policy="specreason", priming_steps=0),
            srm=backend,
            lrm=backend,
            session_id="s",
        )
    )
    assert result.failed
    assert result.error is not None
    assert result.error.startswith("request_refused")
    assert "judge" in result.error


def test_a_server_without_prompt_logprobs_fails_a_likelihood_session_clearly() -> None:
    backend: Backend = _RejectingJudge()  # its scoring call says backend_unsupported, as OpenAI's would
    result = asyncio.run(
        run_session(
            Q,
            SessionParams(policy="likelihood", priming_steps=0),
            srm=backend,
            lrm=backend,
            session_id="s",
        )
    )
    assert result.failed
    assert result.error is not None
    assert result.error.startswith("backend_unsupported")
    assert "no prompt log-probabilities" in result.error


def test_runner_fails_a_session_past_its_deadline() -> None:
    class _Slow(_RejectingJudge):
        async def generate(self, request: GenerationRequest) -> Generation:
            await asyncio.sleep(5)
            raise AssertionError("unreachable")

    ticks = iter([0.0, *([0.5] * 10)])  # requested at 0, the step starts at 0.5 of a 1 s deadline
    backend: Backend = _Slow()
    result = asyncio.run(
        run_session(
            Q,
            SessionParams(policy="srm-only", deadline_s=1.0),
            srm=backend,
            lrm=backend,
            session_id="s",
            clock=lambda: next(ticks),
        )
    )
    assert result.failed
    assert result.end_reason == "deadline_exceeded"


def test_step_committed_is_what_a_commit_emits() -> None:
    state, cmd = _srm_command("lrm-only")
    _state, out = decide(state, step_generated(cmd, step("L0"), BackendTimings(), at=1.0))
    assert isinstance(out[0], StepCommitted)
    assert out[0].index == 0
