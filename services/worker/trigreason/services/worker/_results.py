"""What a worker (or the in-process runner) reports for a command: built in one place for both paths."""

from __future__ import annotations

from trigreason.proto import (
    BackendTimings,
    GeneratedStep,
    GenerateStep,
    JudgeScored,
    JudgeStep,
    StepFailed,
    StepGenerated,
    TokenLogprob,
)

__all__ = ["judge_scored", "step_failed", "step_generated"]


def step_generated(
    command: GenerateStep, step: GeneratedStep, timings: BackendTimings, *, at: float
) -> StepGenerated:
    """A generated step; the trigger and trigger context travel on unchanged for the evaluator."""
    return StepGenerated(
        session_id=command.session_id,
        command_id=command.command_id,
        step_index=command.step_index,
        attempt=command.attempt,
        role=command.role,
        step=step,
        trigger=command.trigger,
        context=command.context,
        timings=timings,
        at=at,
    )


def judge_scored(
    command: JudgeStep,
    top_logprobs: tuple[TokenLogprob, ...],
    timings: BackendTimings,
    *,
    at: float,
    scored: tuple[TokenLogprob, ...] = (),
) -> JudgeScored:
    return JudgeScored(
        session_id=command.session_id,
        command_id=command.command_id,
        step_index=command.step_index,
        attempt=command.attempt,
        top_logprobs=top_logprobs,
        candidate=command.candidate,
        timings=timings,
        at=at,
        scored=scored,
    )


def step_failed(command: GenerateStep | JudgeStep, *, code: str, message: str, at: float) -> StepFailed:
    """The one way a worker (or the in-process runner) reports that it gave up on a command."""
    return StepFailed(
        session_id=command.session_id,
        command_id=command.command_id,
        step_index=command.step_index,
        attempt=command.attempt,
        role="lrm" if isinstance(command, JudgeStep) else command.role,
        code=code,
        message=message,
        at=at,
    )
