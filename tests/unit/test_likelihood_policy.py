"""The likelihood policy: its statistic and threshold at the edges, how the SRM-side triggers combine with
it, and the evaluator's scoring-call round trip (pure logic, no bus)."""

from __future__ import annotations

import math

import msgspec
import pytest

from trigreason.proto import (
    GeneratedStep,
    JudgeScored,
    JudgeStep,
    SessionParams,
    StepGenerated,
    TokenLogprob,
    TriggerContext,
    Verdict,
)
from trigreason.services.trigger_evaluator import evaluate
from trigreason.services.trigger_evaluator.policies import (
    LikelihoodParams,
    PolicyError,
    PolicyRegistry,
    ScoreRequest,
    SrmStep,
    StepVerdict,
    likelihood_replaces,
    likelihood_statistic,
)

INF = math.inf
NAN = math.nan

STAT_CASES = [
    # (statistic, log-probabilities, window, floor, expected)
    ("mean", [], 8, -2.3, None),
    ("window_min", [], 8, -2.3, None),
    ("low_share", [], 8, -2.3, None),
    ("mean", [-0.5], 8, -2.3, -0.5),
    ("window_min", [-0.5], 8, -2.3, -0.5),  # shorter than a window: the step's mean
    ("low_share", [-0.5], 8, -2.3, 0.0),
    ("low_share", [-3.0], 8, -2.3, 1.0),
    ("mean", [-1.0, -3.0], 8, -2.3, -2.0),
    ("mean", [0.0, -INF], 8, -2.3, -INF),
    ("window_min", [0.0, -INF, 0.0, 0.0], 2, -2.3, -INF),
    ("low_share", [0.0, -INF], 8, -2.3, 0.5),
    ("mean", [NAN, -1.0], 8, -2.3, -INF),  # NaN: no support, as -inf
    ("low_share", [NAN, -1.0, -0.1, -0.2], 8, -2.3, 0.25),
    ("mean", [0.2, -0.2], 8, -2.3, -0.1),  # a positive log-probability (rounding) is clipped to 0
    ("window_min", [-0.1, -0.1, -4.0, -4.0, -0.1], 2, -2.3, -4.0),
    ("window_min", [-0.1, -0.1, -4.0, -0.1, -0.1], 2, -2.3, -2.05),
    ("low_share", [-2.3, -2.31], 8, -2.3, 0.5),  # the floor itself is not below it
]


@pytest.mark.parametrize(("statistic", "lps", "window", "floor", "expected"), STAT_CASES)
def test_statistic(
    statistic: str, lps: list[float], window: int, floor: float, expected: float | None
) -> None:
    got = likelihood_statistic(lps, statistic=statistic, window=window, floor=floor)  # type: ignore[arg-type]
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert not math.isnan(got)
        assert got == pytest.approx(expected)


THRESHOLD_CASES = [
    # (statistic, stat, threshold, replaces)
    ("mean", None, -1.0, False),  # empty step: never replaced
    ("low_share", None, 0.0, False),
    ("mean", -1.0, -1.0, False),  # at the threshold: kept (strictly below replaces)
    ("mean", -1.0001, -1.0, True),
    ("mean", -INF, -100.0, True),
    ("window_min", -0.5, -1.0, False),
    ("window_min", -INF, -1.0, True),
    ("low_share", 0.2, 0.2, False),  # at the threshold: kept (strictly above replaces)
    ("low_share", 0.21, 0.2, True),
    ("low_share", 1.0, 1.0, False),  # threshold 1: low_share never replaces
    ("low_share", 0.0, 0.0, False),
    ("mean", 0.0, 1.0, True),  # threshold 1 on a log-probability: every scored step replaced
]


@pytest.mark.parametrize(("statistic", "stat", "threshold", "replaces"), THRESHOLD_CASES)
def test_threshold(statistic: str, stat: float | None, threshold: float, replaces: bool) -> None:
    assert likelihood_replaces(stat, statistic=statistic, threshold=threshold) is replaces  # type: ignore[arg-type]


REG = PolicyRegistry.builtin()
POLICY = REG.get("likelihood")


@pytest.mark.parametrize(
    ("values", "bad"),
    [
        ({"threshold": -101}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"window": 0}, "window"),
        ({"floor": 0.1}, "floor"),
        ({"statistic": "median"}, "statistic"),
        ({"rho": 1.5}, "rho"),
    ],
)
def test_parameters_have_bounds(values: dict[str, object], bad: str) -> None:
    with pytest.raises(PolicyError, match=bad):
        REG.session_params({"policy": "likelihood", **values})


def test_declares_a_scoring_call_and_priming() -> None:
    info = POLICY.info()
    assert info.needs == "score"
    assert info.primes
    assert info.replayable
    assert "unlikely" in info.triggers
    assert REG.session_params({"policy": "likelihood", "threshold": -0.7}).policy_params["threshold"] == -0.7


def _step(text: str, lps: tuple[float, ...] = (-0.5, -0.5), run: int = 0) -> SrmStep:
    return SrmStep(text=text, token_logprobs=lps, hesitation_run=run)


def test_srm_side_triggers_come_first_and_skip_the_scoring_call() -> None:
    p = LikelihoodParams()
    assert isinstance(POLICY.on_step(_step("We add 3 and 4."), p), ScoreRequest)  # type: ignore[misc]
    # The second hesitating step in a row: intervention, no scoring call.
    v = POLICY.on_step(_step("Wait, that is wrong.", run=1), p)  # type: ignore[misc]
    assert isinstance(v, StepVerdict)
    assert v.replace
    assert v.reason == "intervention"
    assert v.lrm_steps == 1
    # Offload only when rho < 1 (off by default).
    confident = _step("So 7.", lps=(-0.001, -0.001))
    assert isinstance(POLICY.on_step(confident, p), ScoreRequest)  # type: ignore[misc]
    v = POLICY.on_step(confident, msgspec.structs.replace(p, rho=0.5))  # type: ignore[misc]
    assert isinstance(v, StepVerdict)
    assert v.reason == "offload"
    # An empty step is accepted without a call.
    v = POLICY.on_step(_step("", lps=()), p)  # type: ignore[misc]
    assert isinstance(v, StepVerdict)
    assert not v.replace


def test_scored_verdict_reports_statistic_and_threshold() -> None:
    p = LikelihoodParams(threshold=-1.0)
    assert POLICY.on_judged is not None
    low = POLICY.on_judged(_step("x"), [TokenLogprob("a", -0.2), TokenLogprob("b", -3.0)], p)
    assert low.replace
    assert low.reason == "unlikely"
    assert low.score_stat == pytest.approx(-1.6)
    assert low.score_threshold == -1.0
    assert low.hesitation_run == 0
    high = POLICY.on_judged(_step("x"), [TokenLogprob("a", -0.2)], p)
    assert not high.replace
    assert high.score_stat == pytest.approx(-0.2)
    none = POLICY.on_judged(_step("x"), [], p)  # the LRM scored no token: kept, statistic unknown
    assert not none.replace
    assert none.score_stat is None


def _generated(text: str) -> StepGenerated:
    params = REG.session_params({"policy": "likelihood", "priming_steps": 0, "threshold": -1.0})
    ctx = TriggerContext(params=params, judge_prompt_head="PROMPT\n\n")
    step = GeneratedStep(text=text, token_ids=(1, 2), token_logprobs=(-0.5, -0.5))
    return StepGenerated(
        session_id="s-1",
        command_id="s-1.0.0.srm",
        step_index=0,
        role="srm",
        step=step,
        context=ctx,
    )


def test_evaluator_round_trip_through_a_scoring_call() -> None:
    gen = _generated("We add 3 and 4.")
    call = evaluate(gen, REG)
    assert isinstance(call, JudgeStep)
    assert call.prompt == "PROMPT\n\n"
    assert call.continuation == "We add 3 and 4."
    # Old JudgeStep payloads (no continuation) still decode, as judge calls.
    old = msgspec.json.decode(
        msgspec.json.encode(msgspec.structs.replace(call, continuation="")), type=JudgeStep
    )
    assert old.continuation == ""
    scored = JudgeScored(
        session_id="s-1",
        command_id=call.command_id,
        step_index=0,
        top_logprobs=(),
        candidate=gen,
        scored=(TokenLogprob("We", -0.1), TokenLogprob(" add", -INF)),
    )
    verdict = evaluate(scored, REG)
    assert isinstance(verdict, Verdict)
    assert verdict.decision == "replace"
    assert verdict.reason == "unlikely"
    assert verdict.score_stat == -1e9
    assert verdict.score_threshold == -1.0
    assert verdict.scored_tokens == 2
    assert verdict.judge_score is None
    msgspec.json.encode(verdict)  # JSON-safe (no -inf)


def test_session_params_v1_payload_unaffected() -> None:
    params = SessionParams(policy="likelihood")
    policy, typed = REG.resolve(params)
    assert policy.name == "likelihood"
    assert typed == LikelihoodParams()
