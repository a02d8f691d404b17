"""Test helpers: step builders and a synchronous driver of the pure core (no bus, no backends)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from msgspec import Struct

from trigreason.proto import (
    ChatTurn,
    GeneratedStep,
    GenerateStep,
    JudgeScored,
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionRequested,
    SessionSnapshot,
    StepGenerated,
    TokenLogprob,
    Verdict,
)
from trigreason.services.orchestrator import OrchestratorEvent, Output, decide, initial_state
from trigreason.services.trigger_evaluator import PolicyRegistry, evaluate

CONFIDENT = -0.001  # perplexity 1.001: below any tau > 1.001
UNSURE = -1.0  # perplexity 2.72


def step(
    text: str, logprobs: Sequence[float] | None = None, *, n: int = 4, finish: str = "stop_sequence"
) -> GeneratedStep:
    lps = tuple(logprobs) if logprobs is not None else (UNSURE,) * n
    return GeneratedStep(
        text=text,
        token_ids=tuple(range(len(lps))),
        token_texts=tuple("t" for _ in lps),
        token_logprobs=lps,
        finish_reason=finish,  # type: ignore[arg-type]
    )


class Trace(Struct, kw_only=True):
    state: SessionSnapshot
    events: list[OrchestratorEvent]
    outputs: list[Output]
    discarded: list[str]  # texts of SRM steps that a verdict replaced


def drive(
    question: str,
    params: SessionParams,
    *,
    srm: Callable[[GenerateStep], GeneratedStep],
    lrm: Callable[[GenerateStep], GeneratedStep],
    judge: Callable[[str], int] = lambda _prompt: 9,
    session_id: str = "s1",
    max_events: int = 10_000,
    messages: tuple[ChatTurn, ...] = (),
    stop: tuple[str, ...] = (),
    policies: PolicyRegistry | None = None,
) -> Trace:
    """Run a session through ``decide``/``evaluate`` exactly as the runner routes it, synchronously."""
    state = initial_state(session_id)
    event: OrchestratorEvent = SessionRequested(
        session_id=session_id,
        question=question,
        params=params,
        requested_at=1.0,
        messages=messages,
        stop=stop,
    )
    trace = Trace(state=state, events=[], outputs=[], discarded=[])
    clock = 1.0
    for _ in range(max_events):
        trace.events.append(event)
        state, outputs = decide(state, event, policies)
        trace.state = state
        trace.outputs.extend(outputs)
        commands = [o for o in outputs if isinstance(o, GenerateStep)]
        if any(isinstance(o, SessionFinished | SessionFailed) for o in outputs):
            assert not commands
            return trace
        (command,) = commands
        clock += 1.0
        gen = (srm if command.role == "srm" else lrm)(command)
        generated = StepGenerated(
            session_id=session_id,
            command_id=command.command_id,
            step_index=command.step_index,
            attempt=command.attempt,
            role=command.role,
            step=gen,
            trigger=command.trigger,
            context=command.context,
            at=clock,
        )
        if command.role == "lrm":
            event = generated
            continue
        verdict = evaluate(generated, policies)
        if not isinstance(verdict, Verdict):
            score = judge(verdict.prompt)
            verdict = evaluate(
                JudgeScored(
                    session_id=session_id,
                    command_id=verdict.command_id,
                    step_index=verdict.step_index,
                    attempt=verdict.attempt,
                    top_logprobs=(TokenLogprob(str(score), -0.05),),
                    candidate=generated,
                    at=clock,
                ),
                policies,
            )
            assert isinstance(verdict, Verdict)
        if verdict.decision == "replace":
            trace.discarded.append(gen.text)
        event = verdict
    raise AssertionError("session did not end")


def scripted(
    *texts: str | GeneratedStep, then: GeneratedStep | None = None
) -> Callable[[GenerateStep], GeneratedStep]:
    queue = [t if isinstance(t, GeneratedStep) else step(t) for t in texts]

    def next_step(_cmd: GenerateStep) -> GeneratedStep:
        if queue:
            return queue.pop(0)
        if then is None:
            raise AssertionError("script exhausted")
        return then

    return next_step
