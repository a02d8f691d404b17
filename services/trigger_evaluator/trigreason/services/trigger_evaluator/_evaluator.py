"""The trigger-evaluator's core: a stateless, pure function from an SRM step (or a judge score) to
either a ``Verdict`` or, for a policy that needs a judge or a scoring call, a ``JudgeStep`` for the LRM.
It dispatches through the policy registry; no policy is named here."""

from __future__ import annotations

import math
from typing import Any

from trigreason.proto import (
    CLOUD_FALLBACK_TRIGGER,
    IllegalEvent,
    JudgeScored,
    JudgeStep,
    StepGenerated,
    TriggerContext,
    Verdict,
    judge_command_id,
)

from .policies import JudgeRequest, Policy, PolicyError, PolicyRegistry, ScoreRequest, SrmStep, StepVerdict

__all__ = ["evaluate"]


def evaluate(
    event: StepGenerated | JudgeScored, policies: PolicyRegistry | None = None
) -> Verdict | JudgeStep:
    """``policies``: the registry to dispatch through (the built-in policies when ``None``)."""
    registry = policies or PolicyRegistry.builtin()
    if isinstance(event, JudgeScored):
        return _on_judged(event, registry)
    if event.role != "srm" or event.context is None:
        raise IllegalEvent(f"{event.command_id}: only SRM steps with a trigger context are evaluated")
    ctx = event.context
    if event.trigger == CLOUD_FALLBACK_TRIGGER:
        # The SRM wrote this step because the cloud did not answer (on_cloud_unavailable=srm): there is no
        # LRM to hand it to, whatever the policy would say.
        return _verdict(event, StepVerdict(replace=False), at=event.at)
    policy, params = _resolve(registry, ctx)
    if not policy.uses_srm or policy.on_step is None:
        raise IllegalEvent(f"policy {policy.name!r} never asks the SRM for a step")
    result = policy.on_step(_srm_step(event, ctx), params)
    if isinstance(result, JudgeRequest):
        if policy.needs != "judge":
            raise IllegalEvent(f"policy {policy.name!r} asked for a judge it did not declare")
        return JudgeStep(
            session_id=event.session_id,
            command_id=judge_command_id(event.command_id),
            step_index=event.step_index,
            attempt=event.attempt,
            prompt=ctx.judge_prompt_head + event.step.text + ctx.judge_prompt_tail,
            top_n=result.top_n,
            candidate=event,
            issued_at=event.at,
        )
    if isinstance(result, ScoreRequest):
        if policy.needs != "score":
            raise IllegalEvent(f"policy {policy.name!r} asked for a scoring call it did not declare")
        # The step read by the LRM as the continuation of its own generation prompt (one prefill).
        return JudgeStep(
            session_id=event.session_id,
            command_id=judge_command_id(event.command_id),
            step_index=event.step_index,
            attempt=event.attempt,
            prompt=ctx.judge_prompt_head,
            continuation=event.step.text,
            top_n=1,
            candidate=event,
            issued_at=event.at,
        )
    return _verdict(event, result, at=event.at)


def _on_judged(event: JudgeScored, registry: PolicyRegistry) -> Verdict:
    candidate = event.candidate
    ctx = candidate.context
    if ctx is None:
        raise IllegalEvent(f"{event.command_id}: judged step lost its trigger context")
    policy, params = _resolve(registry, ctx)
    if policy.on_judged is None:
        raise IllegalEvent(f"policy {policy.name!r} takes no judge score")
    scored = event.scored if policy.needs == "score" else event.top_logprobs
    result = policy.on_judged(_srm_step(candidate, ctx), scored, params)
    return _verdict(candidate, result, at=max(event.at, candidate.at), judged=event)


def _resolve(registry: PolicyRegistry, ctx: TriggerContext) -> tuple[Policy[Any], Any]:
    try:
        return registry.resolve(ctx.params)
    except PolicyError as exc:  # an unknown policy or bad parameters: no verdict can be given
        raise IllegalEvent(exc.message, code=exc.code) from None


def _srm_step(event: StepGenerated, ctx: TriggerContext) -> SrmStep:
    return SrmStep(
        text=event.step.text,
        token_logprobs=event.step.token_logprobs,
        index=event.step_index,
        attempt=event.attempt,
        hesitation_run=ctx.hesitation_run_before,
        seed=ctx.params.seed,
    )


def _verdict(
    candidate: StepGenerated, v: StepVerdict, *, at: float, judged: JudgeScored | None = None
) -> Verdict:
    return Verdict(
        session_id=candidate.session_id,
        step_index=candidate.step_index,
        attempt=candidate.attempt,
        decision="replace" if v.replace else "accept",
        lrm_steps=max(1, v.lrm_steps) if v.replace else 0,
        reason=(v.reason or "offload") if v.replace else None,
        candidate=candidate,
        r_s=v.r_s,
        hesitates=v.hesitates,
        hesitation_run_after=v.hesitation_run,
        judge_score=v.judge_score,
        judge_timings=judged.timings if judged is not None else None,
        at=at,
        score_stat=_finite(v.score_stat),
        score_threshold=v.score_threshold,
        scored_tokens=len(judged.scored) if judged is not None else 0,
    )


def _finite(x: float | None) -> float | None:
    # JSON has no -inf: a step the LRM gave no support at all is reported at the lowest bound.
    if x is None or math.isfinite(x):
        return x
    return -1e9 if x < 0 else 1e9
