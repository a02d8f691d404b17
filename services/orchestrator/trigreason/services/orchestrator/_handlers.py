"""The orchestrator's transition functions. Pure: no I/O, no clock, no random ids.

Each takes the snapshot and one event and returns the new snapshot and what the service must publish.
``transitions.TRANSITIONS`` says which function handles which event in which phase.
"""

from __future__ import annotations

import msgspec

from trigreason.proto import (
    CLOUD_FALLBACK_TRIGGER,
    MAX_CONTEXT_BYTES,
    CloudUnavailable,
    CommittedStep,
    DeadlineReached,
    GeneratedStep,
    GenerateStep,
    MessageDeadLettered,
    Role,
    SessionFailed,
    SessionFinished,
    SessionRequested,
    SessionSnapshot,
    StaleEvent,
    StepCommitted,
    StepFailed,
    StepGenerated,
    TriggerContext,
    TriggerKind,
    Verdict,
    answered_command,
)
from trigreason.services.trigger_evaluator.policies import PolicyError, PolicyRegistry

from ._accounting import add_call, add_trigger, session_stats
from ._answers import extract_boxed
from ._prompts import STEP_DELIMITER, render_generation_prompt, render_judge_prompt

__all__ = [
    "Output",
    "on_dead_lettered",
    "on_deadline",
    "on_lrm_step",
    "on_session_requested",
    "on_step_failed",
    "on_verdict",
]

# What a decision owes the bus; ``DeadlineReached`` arms the session's deadline timer.
Output = GenerateStep | StepCommitted | SessionFinished | SessionFailed | DeadlineReached
Decision = tuple[SessionSnapshot, tuple[Output, ...]]

# Consecutive blank steps (nothing but whitespace before the delimiter) after which a session stops.
_MAX_BLANK_RUN = 3
_SEED_MIX = 0x9E3779B97F4A7C15


def command_id(session_id: str, index: int, attempt: int, role: Role) -> str:
    """Deterministic: the same decision always yields the same id, so JetStream de-duplicates it."""
    return f"{session_id}.{index}.{attempt}.{role}"


def _step_seed(seed: int, index: int, attempt: int) -> int:
    # A distinct, reproducible seed per (step, attempt): a retried blank step does not repeat itself.
    return (seed + _SEED_MIX * (index * 1024 + attempt + 1)) % (2**63)


def on_session_requested(
    state: SessionSnapshot, event: SessionRequested, policies: PolicyRegistry
) -> Decision:
    params = event.params
    counters = state.counters
    run_left, run_reason = 0, None
    try:
        policy, own = policies.resolve(params)
    except PolicyError as exc:  # the consumer's decoder refuses these first; the pure core stays total
        named = msgspec.structs.replace(state, question=event.question, params=params)
        return _fail(named, exc.code, exc.message)
    if policy.primes and own.priming_steps > 0:
        run_left, run_reason = own.priming_steps, "priming"
        counters = add_trigger(counters, "priming")
    started = msgspec.structs.replace(
        state,
        question=event.question,
        params=params,
        messages=event.messages,
        stop=event.stop,
        lrm_run_left=run_left,
        lrm_run_reason=run_reason,
        counters=counters,
        requested_at=event.requested_at,
        last_event_at=event.requested_at,
    )
    timer = DeadlineReached(session_id=state.session_id, deadline_at=event.requested_at + params.deadline_s)
    return _next_command(started, (timer,), policies)


def on_lrm_step(state: SessionSnapshot, event: StepGenerated, policies: PolicyRegistry) -> Decision:
    _check_awaited(state, event.command_id)
    state = _seen(state, event.at)
    counters = add_call(state.counters, "lrm", event.timings)
    state = msgspec.structs.replace(state, counters=counters)
    if _is_blank(event.step):
        return _on_blank(state, event.step, policies)
    committed = CommittedStep(
        index=event.step_index,
        role="lrm",
        text=event.step.text,
        tokens=event.step.tokens,
        trigger=event.trigger,
    )
    run_left = max(0, state.lrm_run_left - 1)
    state = msgspec.structs.replace(
        state,
        counters=msgspec.structs.replace(
            state.counters,
            lrm_tokens=state.counters.lrm_tokens + committed.tokens,
            lrm_steps=state.counters.lrm_steps + 1,
        ),
        lrm_run_left=run_left,
        lrm_run_reason=state.lrm_run_reason if run_left else None,
        hesitation_run=0,  # the LRM wrote a step: the hesitation run starts over
    )
    return _commit(state, committed, event.step, policies)


def on_verdict(state: SessionSnapshot, event: Verdict, policies: PolicyRegistry) -> Decision:
    candidate = event.candidate
    _check_awaited(state, candidate.command_id)
    state = _seen(state, max(event.at, candidate.at))
    counters = add_call(state.counters, "srm", candidate.timings)
    if event.judge_timings is not None:  # a judge call, or a scoring call (no judge score)
        scoring = event.judge_score is None
        counters = add_call(counters, "lrm", event.judge_timings, judge=not scoring, score=scoring)
    tokens = candidate.step.tokens
    if event.decision == "replace":
        reason: TriggerKind = event.reason or "offload"
        counters = add_trigger(counters, reason)
        counters = msgspec.structs.replace(counters, srm_wasted_tokens=counters.srm_wasted_tokens + tokens)
        state = msgspec.structs.replace(
            state,
            counters=counters,
            attempt=state.attempt + 1,
            lrm_run_left=max(1, event.lrm_steps),
            lrm_run_reason=reason,
            hesitation_run=0,
        )
        return _next_command(state, (), policies)
    # A step the SRM wrote because the cloud did not answer is marked so (on_cloud_unavailable=srm).
    fallback = candidate.trigger == CLOUD_FALLBACK_TRIGGER
    if fallback:
        counters = add_trigger(counters, CLOUD_FALLBACK_TRIGGER)
    state = msgspec.structs.replace(state, counters=counters)
    if _is_blank(candidate.step):
        return _on_blank(state, candidate.step, policies)
    committed = CommittedStep(
        index=event.step_index,
        role="srm",
        text=candidate.step.text,
        tokens=tokens,
        trigger=CLOUD_FALLBACK_TRIGGER if fallback else None,
        r_s=event.r_s,
    )
    state = msgspec.structs.replace(
        state,
        counters=msgspec.structs.replace(
            state.counters,
            srm_tokens=state.counters.srm_tokens + tokens,
            srm_steps=state.counters.srm_steps + 1,
        ),
        hesitation_run=event.hesitation_run_after,
    )
    return _commit(state, committed, candidate.step, policies)


def on_cloud_unavailable(
    state: SessionSnapshot, event: CloudUnavailable, policies: PolicyRegistry
) -> Decision:
    """The cloud does not answer and the request said ``on_cloud_unavailable=srm``: the SRM writes the
    awaited step instead (a late LRM answer to the abandoned command is stale)."""
    _check_awaited(state, event.command_id)
    state = _seen(state, event.at)
    state = msgspec.structs.replace(state, attempt=state.attempt + 1, lrm_run_left=0, lrm_run_reason=None)
    return _next_command(state, (), policies, cloud_fallback=True)


def on_step_failed(state: SessionSnapshot, event: StepFailed, policies: PolicyRegistry) -> Decision:
    _check_awaited(state, answered_command(event.command_id))
    state = _seen(state, event.at)
    what = "judge" if event.command_id != answered_command(event.command_id) else event.role
    return _fail(state, event.code, f"step {event.step_index} ({what}): {event.message}")


def on_deadline(state: SessionSnapshot, event: DeadlineReached, policies: PolicyRegistry) -> Decision:
    """The deadline passed before the session ended (the service hands the timer over only when due)."""
    seconds = event.deadline_at - state.requested_at
    return _fail(state, "deadline_exceeded", f"the session did not end within its deadline ({seconds:g} s)")


def on_dead_lettered(
    state: SessionSnapshot, event: MessageDeadLettered, policies: PolicyRegistry
) -> Decision:
    state = _seen(state, event.at)
    return _fail(
        state, "dead_lettered", f"a message on {event.origin_subject} was dead-lettered: {event.reason}"
    )


# -- helpers ---------------------------------------------------------------------------------------


def _check_awaited(state: SessionSnapshot, cid: str) -> None:
    if state.awaiting != cid:
        raise StaleEvent(f"session {state.session_id} awaits {state.awaiting!r}, not {cid!r}")


def _seen(state: SessionSnapshot, at: float) -> SessionSnapshot:
    return msgspec.structs.replace(state, last_event_at=max(state.last_event_at, at))


def _is_blank(step: GeneratedStep) -> bool:
    return not step.text.strip() and step.finish_reason != "eos_token"


def _on_blank(state: SessionSnapshot, step: GeneratedStep, policies: PolicyRegistry) -> Decision:
    """A blank step is not committed; it is retried with a new seed, and too many in a row end the session."""
    blank_run = state.blank_run + 1
    state = msgspec.structs.replace(state, blank_run=blank_run, attempt=state.attempt + 1)
    if blank_run >= _MAX_BLANK_RUN:
        return _finish(state, "stalled", ())
    return _next_command(state, (), policies)


def _commit(
    state: SessionSnapshot, step: CommittedStep, generated: GeneratedStep, policies: PolicyRegistry
) -> Decision:
    cut = _stop_cut(state, step.text)
    if cut == 0:  # the committed text already reached a stop sequence: nothing of this step is kept
        return _finish(msgspec.structs.replace(state, attempt=0, blank_run=0), "stop", ())
    if cut is not None:
        step = msgspec.structs.replace(step, text=step.text[:cut])
    state = msgspec.structs.replace(state, steps=(*state.steps, step), attempt=0, blank_run=0)
    out: tuple[Output, ...] = (
        StepCommitted(
            session_id=state.session_id,
            index=step.index,
            role=step.role,
            text=step.text,
            tokens=step.tokens,
            trigger=step.trigger,
            r_s=step.r_s,
        ),
    )
    params = state.params
    committed_tokens = state.counters.srm_tokens + state.counters.lrm_tokens
    if cut is not None:
        return _finish(state, "stop", out)
    if extract_boxed(step.text) is not None:
        return _finish(state, "final_answer", out)
    if generated.finish_reason == "eos_token":
        return _finish(state, "eos", out)
    if committed_tokens >= params.max_tokens:
        return _finish(state, "token_budget", out)
    if len(state.steps) >= params.max_steps:
        return _finish(state, "step_cap", out)
    if _context_bytes(state) >= MAX_CONTEXT_BYTES:
        return _finish(state, "context_limit", out)  # the next prompt would not fit a message
    return _next_command(state, out, policies)


def _fail(state: SessionSnapshot, code: str, message: str) -> Decision:
    failed = msgspec.structs.replace(state, phase="failed", awaiting=None, end_reason=code)
    return failed, (
        SessionFailed(session_id=state.session_id, code=code, message=message, stats=session_stats(failed)),
    )


def _stop_cut(state: SessionSnapshot, text: str) -> int | None:
    """Where in ``text`` (the step about to be committed) the committed text reaches the request's first
    stop sequence, or None. The committed text is the steps joined by the delimiter, so a sequence may
    span it; one that began before this step gives 0 (the step is dropped). Token counts stay the
    generated ones: the tokens were spent."""
    if not state.stop:
        return None
    before = "".join(s.text + STEP_DELIMITER for s in state.steps)
    # Only the tail of the earlier text can hold the start of a sequence not found before.
    tail = before[-max(len(s) for s in state.stop) :] if before else ""
    full = tail + text
    hits = [i for i in (full.find(s) for s in state.stop) if i >= 0]
    if not hits:
        return None
    return max(0, min(hits) - len(tail))


def _context_bytes(state: SessionSnapshot) -> int:
    asked = sum(len(t.content.encode()) for t in state.messages) or len(state.question.encode())
    return asked + sum(len(s.text.encode()) for s in state.steps)


def _finish(state: SessionSnapshot, reason: str, out: tuple[Output, ...]) -> Decision:
    answer = None
    for step in reversed(state.steps):
        answer = extract_boxed(step.text)
        if answer is not None:
            break
    done = msgspec.structs.replace(state, phase="finished", awaiting=None, answer=answer, end_reason=reason)
    finished = SessionFinished(
        session_id=state.session_id,
        answer=answer,
        reason=reason,
        steps=len(done.steps),
        stats=session_stats(done),
    )
    return done, (*out, finished)


def _next_command(
    state: SessionSnapshot, out: tuple[Output, ...], policies: PolicyRegistry, *, cloud_fallback: bool = False
) -> Decision:
    params = state.params
    policy = policies.get(params.policy)
    index = len(state.steps)
    trigger: TriggerKind | None = None
    if cloud_fallback:
        role: Role = "srm"
        trigger = CLOUD_FALLBACK_TRIGGER
    elif state.lrm_run_left > 0:
        role = "lrm"
        trigger = state.lrm_run_reason
    elif not policy.uses_srm:
        role = "lrm"
    else:
        role = "srm"
    texts = [s.text for s in state.steps]
    family = params.srm_prompt if role == "srm" else params.lrm_prompt
    context = None
    if role == "srm":
        head, tail = ("", "")
        if policy.needs == "judge" and not cloud_fallback:
            head, tail = render_judge_prompt(params.lrm_prompt, state.question, texts, state.messages)
        elif policy.needs == "score":  # the LRM reads the SRM's step as its own next step
            head = render_generation_prompt(params.lrm_prompt, state.question, texts, state.messages)
        context = TriggerContext(
            params=params,
            hesitation_run_before=state.hesitation_run,
            judge_prompt_head=head,
            judge_prompt_tail=tail,
        )
    committed_tokens = state.counters.srm_tokens + state.counters.lrm_tokens
    cid = command_id(state.session_id, index, state.attempt, role)
    command = GenerateStep(
        session_id=state.session_id,
        command_id=cid,
        step_index=index,
        attempt=state.attempt,
        role=role,
        prompt=render_generation_prompt(family, state.question, texts, state.messages),
        # Capped by what is left of the budget, so the committed total never exceeds max_tokens.
        max_new_tokens=max(1, min(params.step_max_tokens, params.max_tokens - committed_tokens)),
        temperature=params.temperature,
        top_p=params.top_p,
        seed=_step_seed(params.seed, index, state.attempt),
        trigger=trigger,
        context=context,
    )
    phase = "awaiting_lrm" if role == "lrm" else "awaiting_verdict"
    return msgspec.structs.replace(state, phase=phase, awaiting=cid), (*out, command)
