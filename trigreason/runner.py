"""The in-process runner: the same pure core and policies as the cluster, driven without a bus.

Evaluation and the benchmarks use it as the no-bus baseline; routing mirrors the services exactly
(SRM steps go through the trigger evaluator, LRM steps and verdicts through ``decide``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from msgspec import Struct

from trigreason.proto import (
    BackendError,
    ChatTurn,
    CommittedStep,
    DeadlineReached,
    GenerateStep,
    JudgeStep,
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionRequested,
    SessionSnapshot,
    SessionStats,
    StepCommitted,
    Verdict,
)
from trigreason.services.orchestrator import OrchestratorEvent, decide, initial_state
from trigreason.services.trigger_evaluator import PolicyRegistry, evaluate
from trigreason.services.worker import judge_scored, step_failed, step_generated
from trigreason.services.worker.backends import Backend, GenerationRequest

__all__ = ["SessionResult", "run_session"]

OnEvent = Callable[[StepCommitted | Verdict | GenerateStep], Awaitable[None] | None]


class SessionResult(Struct, kw_only=True, frozen=True):
    session_id: str
    question: str
    policy: str
    answer: str | None
    end_reason: str
    failed: bool
    steps: tuple[CommittedStep, ...]
    stats: SessionStats
    error: str | None = None


async def run_session(
    question: str,
    params: SessionParams,
    *,
    srm: Backend,
    lrm: Backend,
    session_id: str,
    on_event: OnEvent | None = None,
    clock: Callable[[], float] = time.time,
    messages: tuple[ChatTurn, ...] = (),
    stop: tuple[str, ...] = (),
    policies: PolicyRegistry | None = None,
) -> SessionResult:
    """Solve one question (after the conversation ``messages``, if any); ``on_event`` sees each command,
    verdict and committed step as it happens. ``policies``: the registry (default: the built-in policies
    and those in TRIGREASON_POLICY_MODULES)."""
    registry = policies or PolicyRegistry.from_env()

    async def notify(item: StepCommitted | Verdict | GenerateStep) -> None:
        if on_event is not None:
            res = on_event(item)
            if res is not None:
                await res

    state = initial_state(session_id)
    event: OrchestratorEvent = SessionRequested(
        session_id=session_id,
        question=question,
        params=params,
        requested_at=clock(),
        messages=messages,
        stop=stop,
    )
    deadline: DeadlineReached | None = None
    while True:
        state, outputs = decide(state, event, registry)
        command: GenerateStep | None = None
        for out in outputs:
            if isinstance(out, SessionFinished | SessionFailed):
                return _result(state, out)
            if isinstance(out, DeadlineReached):
                deadline = out  # the cluster arms a timer; here the step's wait is bounded instead
                continue
            await notify(out)
            if isinstance(out, GenerateStep):
                command = out
        if command is None:  # pragma: no cover - decide always owes a command or an end
            raise AssertionError("decide returned neither a command nor an end")
        left = None if deadline is None else deadline.deadline_at - clock()
        try:
            async with asyncio.timeout(left):
                event = await _execute(command, srm=srm, lrm=lrm, clock=clock, policies=registry)
        except TimeoutError:
            assert deadline is not None
            event = deadline
            continue
        if isinstance(event, Verdict):
            await notify(event)


async def _execute(
    command: GenerateStep, *, srm: Backend, lrm: Backend, clock: Callable[[], float], policies: PolicyRegistry
) -> OrchestratorEvent:
    """What a worker (and, for SRM steps, the trigger evaluator) would publish for ``command``."""
    backend = srm if command.role == "srm" else lrm
    request = GenerationRequest(
        prompt=command.prompt,
        max_new_tokens=command.max_new_tokens,
        stop=command.stop,
        temperature=command.temperature,
        top_p=command.top_p,
        seed=command.seed,
        affinity_key=command.session_id,
    )
    try:
        gen = await backend.generate(request)
    except BackendError as exc:
        return step_failed(command, code=exc.code, message=exc.message, at=clock())
    generated = step_generated(command, gen.step, gen.timings, at=clock())
    if command.role == "lrm":
        return generated
    verdict_or_judge = evaluate(generated, policies)
    if isinstance(verdict_or_judge, Verdict):
        return verdict_or_judge
    judge: JudgeStep = verdict_or_judge
    try:
        if judge.continuation:  # a scoring call (as the LRM worker does it)
            read = await lrm.score(judge.prompt, judge.continuation, affinity_key=judge.session_id)
            answer = judge_scored(judge, (), read.timings, at=clock(), scored=read.tokens)
        else:
            scored = await lrm.judge(judge.prompt, top_n=judge.top_n, affinity_key=judge.session_id)
            answer = judge_scored(judge, scored.top_logprobs, scored.timings, at=clock())
    except BackendError as exc:
        # As in the cluster: the judge call's failure, which the orchestrator maps to the judged step.
        return step_failed(judge, code=exc.code, message=exc.message, at=clock())
    verdict = evaluate(answer, policies)
    assert isinstance(verdict, Verdict)
    return verdict


def _result(state: SessionSnapshot, end: SessionFinished | SessionFailed) -> SessionResult:
    failed = isinstance(end, SessionFailed)
    return SessionResult(
        session_id=state.session_id,
        question=state.question,
        policy=state.params.policy,
        answer=None if isinstance(end, SessionFailed) else end.answer,
        end_reason=state.end_reason or ("failed" if failed else "finished"),
        failed=failed,
        steps=state.steps,
        stats=end.stats,
        error=f"{end.code}: {end.message}" if isinstance(end, SessionFailed) else None,
    )
