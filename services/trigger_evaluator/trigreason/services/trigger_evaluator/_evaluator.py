"""The trigger-evaluator's core: a stateless, pure function from an SRM step (or a judge score) to
either a ``Verdict`` or, under SpecReason, a ``JudgeStep`` for the LRM."""

from __future__ import annotations

from trigreason.proto import IllegalEvent, JudgeScored, JudgeStep, StepGenerated, Verdict, judge_command_id

from ._triggers import confident_share, decide_trigreason, hesitates, judge_score, random_offload

__all__ = ["evaluate"]


def evaluate(event: StepGenerated | JudgeScored) -> Verdict | JudgeStep:
    if isinstance(event, JudgeScored):
        return _on_judged(event)
    if event.role != "srm" or event.context is None:
        raise IllegalEvent(f"{event.command_id}: only SRM steps with a trigger context are evaluated")
    ctx = event.context
    params = ctx.params
    step = event.step
    if params.policy == "trigreason":
        d = decide_trigreason(
            text=step.text,
            token_logprobs=step.token_logprobs,
            hesitation_run=ctx.hesitation_run_before,
            tau=params.tau,
            rho=params.rho,
            k=params.k,
            m=params.m,
            hesitation=params.hesitation,
        )
        replace = d.verdict != "accept"
        return Verdict(
            session_id=event.session_id,
            step_index=event.step_index,
            attempt=event.attempt,
            decision="replace" if replace else "accept",
            lrm_steps=d.lrm_steps,
            reason=None if not replace else ("intervention" if d.verdict == "intervene" else "offload"),
            candidate=event,
            r_s=d.r_s,
            hesitates=d.hesitates,
            hesitation_run_after=d.next_run,
            at=event.at,
        )
    if params.policy == "specreason":
        return JudgeStep(
            session_id=event.session_id,
            command_id=judge_command_id(event.command_id),
            step_index=event.step_index,
            attempt=event.attempt,
            prompt=ctx.judge_prompt_head + step.text + ctx.judge_prompt_tail,
            top_n=params.judge_top_n,
            candidate=event,
            issued_at=event.at,
        )
    if params.policy == "random":
        replace = random_offload(
            seed=params.seed, step_index=event.step_index, attempt=event.attempt, offload_p=params.offload_p
        )
        return Verdict(
            session_id=event.session_id,
            step_index=event.step_index,
            attempt=event.attempt,
            decision="replace" if replace else "accept",
            lrm_steps=1 if replace else 0,
            reason="random" if replace else None,
            candidate=event,
            r_s=confident_share(step.token_logprobs, params.tau),  # reported, never used to decide
            hesitates=hesitates(step.text, params.hesitation),
            at=event.at,
        )
    if params.policy == "srm-only":
        return Verdict(
            session_id=event.session_id,
            step_index=event.step_index,
            attempt=event.attempt,
            decision="accept",
            candidate=event,
            hesitates=hesitates(step.text, params.hesitation),
            at=event.at,
        )
    raise IllegalEvent(f"policy {params.policy!r} never asks the SRM for a step")


def _on_judged(event: JudgeScored) -> Verdict:
    candidate = event.candidate
    ctx = candidate.context
    if ctx is None:
        raise IllegalEvent(f"{event.command_id}: judged step lost its trigger context")
    params = ctx.params
    score = judge_score(event.top_logprobs, params.judge_mode)
    # No digit among the judge's top tokens: treat as a rejection, the LRM writes the step.
    accept = score is not None and score >= params.judge_threshold
    return Verdict(
        session_id=event.session_id,
        step_index=event.step_index,
        attempt=event.attempt,
        decision="accept" if accept else "replace",
        lrm_steps=0 if accept else 1,
        reason=None if accept else "judge_reject",
        candidate=candidate,
        judge_score=score if score is not None else -1.0,
        judge_timings=event.timings,
        at=max(event.at, candidate.at),
    )
