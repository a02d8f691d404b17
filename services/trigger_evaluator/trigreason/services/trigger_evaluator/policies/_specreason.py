"""SpecReason (baseline): the LRM scores every SRM step 0-9 and regenerates the ones below a threshold."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import msgspec
from msgspec import Meta

from trigreason.proto import JudgeMode, TokenLogprob

from ._registry import JudgeRequest, Policy, SrmStep, StepVerdict

__all__ = ["POLICY", "SpecReasonParams", "judge_score"]


class SpecReasonParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    judge_threshold: Annotated[float, Meta(ge=0, le=9)] = 7.0
    judge_mode: JudgeMode = "greedy"
    judge_top_n: Annotated[int, Meta(ge=1, le=100)] = 20


def judge_score(top_logprobs: Sequence[TokenLogprob], mode: JudgeMode) -> float | None:
    """SpecReason's 0-9 score from the first generated token's top log-probabilities.

    Candidates whose text is a single digit (after stripping whitespace) are pooled per digit.
    ``greedy``: the most probable digit. ``expected``: the probability-weighted mean digit, renormalised
    over the digits seen. ``None`` when no digit is among the candidates.
    """
    mass: dict[int, float] = {}
    for cand in top_logprobs:
        token = cand.text.strip()
        if len(token) == 1 and token.isdigit() and math.isfinite(cand.logprob):
            mass[int(token)] = mass.get(int(token), 0.0) + math.exp(cand.logprob)
    if not mass:
        return None
    if mode == "greedy":
        return float(max(mass.items(), key=lambda kv: (kv[1], -kv[0]))[0])
    total = sum(mass.values())
    return sum(d * p for d, p in mass.items()) / total


def _on_step(step: SrmStep, p: SpecReasonParams) -> JudgeRequest:
    return JudgeRequest(top_n=p.judge_top_n)


def _on_judged(step: SrmStep, top_logprobs: Sequence[TokenLogprob], p: SpecReasonParams) -> StepVerdict:
    score = judge_score(top_logprobs, p.judge_mode)
    # No digit among the judge's top tokens: treat as a rejection, the LRM writes the step.
    accept = score is not None and score >= p.judge_threshold
    return StepVerdict(
        replace=not accept,
        lrm_steps=0 if accept else 1,
        reason=None if accept else "judge_reject",
        judge_score=score if score is not None else -1.0,
    )


POLICY = Policy(
    name="specreason",
    params=SpecReasonParams,
    summary="SpecReason: the LRM scores each SRM step 0-9 and rewrites those below judge_threshold",
    description=(
        "Every SRM step goes to the LRM as a judge: one generated token, whose top judge_top_n "
        "log-probabilities give a 0-9 score (the most probable digit, or the expected digit in "
        "'expected' mode). A step scoring at least judge_threshold is accepted; otherwise (or when no "
        "digit is among the candidates) the LRM regenerates it. Costs one LRM call per SRM step."
    ),
    needs="judge",
    on_step=_on_step,
    on_judged=_on_judged,
    triggers=("judge_reject",),
    badges={"judge_reject": "judge {judge_score:.1f} < {judge_threshold}: reject"},
    accept_badge=("judge", "judge {judge_score:.1f} ≥ {judge_threshold}"),
    colour="#457b9d",
    marks={"judge_reject": "R"},
    marker="s",
    param_help={
        "judge_threshold": "accept an SRM step when the LRM's score is at least this",
        "judge_mode": "greedy (most probable digit) or expected (probability-weighted digit)",
        "judge_top_n": "top log-probabilities the judge call returns",
    },
)
