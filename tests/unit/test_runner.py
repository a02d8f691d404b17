"""The in-process runner drives the same core through the async backend interface."""

from __future__ import annotations

from tests.scripted import ScriptedBackend
from tests.support import CONFIDENT, step
from trigreason.proto import GenerateStep, SessionParams, StepCommitted, Verdict
from trigreason.runner import run_session


async def test_runner_routes_srm_steps_through_the_evaluator() -> None:
    srm = ScriptedBackend("srm", [step("3 + 4 = 7.", [CONFIDENT] * 5), step("So \\boxed{7}.")])
    lrm = ScriptedBackend("lrm", [step("We add."), step("Adding 3 and 4 gives 7.")])
    seen: list[str] = []

    def on_event(item: StepCommitted | Verdict | GenerateStep) -> None:
        seen.append(type(item).__name__)

    result = await run_session(
        "What is 3 + 4?", SessionParams(priming_steps=1), srm=srm, lrm=lrm, session_id="r1", on_event=on_event
    )
    assert not result.failed
    assert (result.answer, result.end_reason) == ("7", "final_answer")
    assert [(s.role, s.trigger) for s in result.steps] == [
        ("lrm", "priming"),
        ("lrm", "offload"),
        ("srm", None),
    ]
    assert result.stats.srm_wasted_tokens == 5
    assert seen.count("Verdict") == 2
    assert seen.count("StepCommitted") == 3
    # The backends were asked to continue the committed steps, delimited by a blank line.
    assert srm.requests[1].prompt.endswith("We add.\n\nAdding 3 and 4 gives 7.\n\n")
    assert all(r.stop == ("\n\n",) for r in srm.requests + lrm.requests)


async def test_runner_specreason_uses_the_lrm_as_judge() -> None:
    srm = ScriptedBackend("srm", [step("We add."), step("So \\boxed{7}.")])
    lrm = ScriptedBackend("lrm", [step("Add 3 and 4.")], judge_scores=[2, 8])
    result = await run_session("3+4?", SessionParams(policy="specreason"), srm=srm, lrm=lrm, session_id="r2")
    assert [(s.role, s.trigger) for s in result.steps] == [("lrm", "judge_reject"), ("srm", None)]
    assert len(lrm.judge_prompts) == 2
    assert result.stats.judge_calls == 2


async def test_backend_failure_ends_the_session_as_failed() -> None:
    result = await run_session(
        "q",
        SessionParams(policy="lrm-only"),
        srm=ScriptedBackend("srm"),
        lrm=ScriptedBackend("lrm"),
        session_id="r3",
    )
    assert result.failed
    assert result.error is not None
    assert "script exhausted" in result.error
