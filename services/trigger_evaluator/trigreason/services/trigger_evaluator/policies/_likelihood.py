"""Likelihood: TrigReason's priming, then the LRM's view of each SRM step (one scoring call) decides.

Each SRM step is read by the LRM as a continuation of the session's prompt (one prefill, whose prefix
is in the LRM's cache under affinity) and the LRM's log-probability of each of the step's tokens comes
back. A statistic of those log-probabilities below (or, for ``low_share``, above) ``threshold`` replaces
the step with an LRM step: the step-level analogue of speculative decoding's acceptance test.

TrigReason's SRM-side triggers are checked first and need no LRM call: intervention (``k`` hesitating
steps in a row, ``m`` LRM steps) and offload (``r_s > rho``; off by default, ``rho = 1``). When either
fires the step is replaced without a scoring call; otherwise the scoring call decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from trigreason.proto import DEFAULT_HESITATION, TokenLogprob

from ._registry import Policy, ScoreRequest, SrmStep, StepVerdict
from ._signals import Hesitation
from ._trigreason import srm_triggers, trigger_verdict

__all__ = ["POLICY", "LikelihoodParams", "Statistic", "likelihood_replaces", "likelihood_statistic"]

# mean: the mean log-probability; window_min: the lowest mean over ``window`` consecutive tokens (the
# whole step's mean when it is shorter); low_share: the share of tokens whose log-probability is below
# ``floor``.
Statistic = Literal["mean", "window_min", "low_share"]


class LikelihoodParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    priming_steps: Annotated[int, Meta(ge=0, le=4096)] = 20
    statistic: Statistic = "mean"
    # mean / window_min: replace when the statistic < threshold (a log-probability, <= 0 to make sense);
    # low_share: replace when the share > threshold (in [0, 1]).
    threshold: Annotated[float, Meta(ge=-100, le=1)] = -1.0
    window: Annotated[int, Meta(ge=1, le=4096)] = 8
    floor: Annotated[float, Meta(ge=-100, le=0)] = -2.3  # about p = 0.1
    # TrigReason's SRM-side triggers, checked before the scoring call (rho = 1: no offload).
    tau: Annotated[float, Meta(gt=0, le=1e6)] = 1.05
    rho: Annotated[float, Meta(ge=0, le=1)] = 1.0
    k: Annotated[int, Meta(ge=1, le=1024)] = 2
    m: Annotated[int, Meta(ge=1, le=1024)] = 1
    hesitation: Hesitation = DEFAULT_HESITATION


def _clean(logprobs: Sequence[float]) -> list[float]:
    # A NaN is a log-probability the LRM could not give: no support for the token, counted as -inf, so a
    # broken server replaces steps (visible) rather than silently accepting them.
    return [-math.inf if math.isnan(x) else min(0.0, x) for x in logprobs]


def likelihood_statistic(
    logprobs: Sequence[float], *, statistic: Statistic, window: int = 8, floor: float = -2.3
) -> float | None:
    """The statistic of the LRM's log-probabilities of a step's tokens; ``None`` for an empty step."""
    lps = _clean(logprobs)
    if not lps:
        return None
    if statistic == "low_share":
        return sum(1 for x in lps if x < floor) / len(lps)
    if statistic == "mean" or len(lps) <= window:
        return math.fsum(lps) / len(lps)
    if any(math.isinf(x) for x in lps):  # a running sum would turn -inf - -inf into NaN
        return -math.inf
    total = math.fsum(lps[:window])
    lowest = total
    for i in range(window, len(lps)):
        total += lps[i] - lps[i - window]
        lowest = min(lowest, total)
    return lowest / window


def likelihood_replaces(stat: float | None, *, statistic: Statistic, threshold: float) -> bool:
    """Whether the statistic crosses the threshold. An empty step (``None``) is never replaced."""
    if stat is None:
        return False
    return stat > threshold if statistic == "low_share" else stat < threshold


def _on_step(step: SrmStep, p: LikelihoodParams) -> StepVerdict | ScoreRequest:
    d = srm_triggers(step, p)
    if d.verdict != "accept" or not step.text:  # a trigger fired, or nothing to score: no LRM call
        return trigger_verdict(d)
    return ScoreRequest()


def _on_scored(step: SrmStep, scored: Sequence[TokenLogprob], p: LikelihoodParams) -> StepVerdict:
    # The SRM-side signals again (pure, cheap): on_step found they did not fire.
    d = srm_triggers(step, p)
    stat = likelihood_statistic(
        [t.logprob for t in scored], statistic=p.statistic, window=p.window, floor=p.floor
    )
    replace = likelihood_replaces(stat, statistic=p.statistic, threshold=p.threshold)
    return StepVerdict(
        replace=replace,
        lrm_steps=1 if replace else 0,
        reason="unlikely" if replace else None,
        r_s=d.r_s,
        hesitates=d.hesitates,
        hesitation_run=0 if replace else d.next_run,
        score_stat=stat,
        score_threshold=p.threshold,
        label="unlikely" if replace else "accept",
    )


POLICY = Policy(
    name="likelihood",
    params=LikelihoodParams,
    summary="Likelihood: TrigReason's priming, then the LRM's log-probabilities of each SRM step decide",
    description=(
        "The LRM writes the first priming_steps steps. Each SRM step is then scored by the LRM in one "
        "prefill (its log-probability of each of the step's tokens, the step read as a continuation of the "
        "session's prompt). The step is replaced by an LRM step ('unlikely') when a statistic of those "
        "log-probabilities crosses threshold: mean (the mean log-probability < threshold), window_min "
        "(the lowest mean over window consecutive tokens < threshold) or low_share (the share of tokens "
        "below floor > threshold). TrigReason's intervention (k hesitating steps, m LRM steps) and "
        "offload (r_s > rho, off at rho = 1) are checked first and replace the step without a scoring "
        "call. An empty step is accepted unscored. Costs one LRM prefill per scored SRM step."
    ),
    needs="score",
    primes=True,
    on_step=_on_step,
    on_judged=_on_scored,
    triggers=("unlikely", "offload", "intervention"),
    in_default_eval=False,
    # "unlikely" has no template: the browser shows the statistic against its threshold from the verdict.
    badges={
        "offload": "offload r_s {r_s:.2f} > ρ {rho}",
        "intervention": "intervention: hesitation run {run} ≥ k {k}",
    },
    colour="#f4a261",  # not srm-only's teal nor lrm-only's diamond: the Pareto plot shows all three
    marker="P",
    param_help={
        "priming_steps": "n: LRM steps at the start",
        "statistic": "mean, window_min or low_share (of the LRM's log-probabilities of the step)",
        "threshold": "replace when mean/window_min < threshold, or low_share > threshold",
        "window": "tokens per window of window_min",
        "floor": "log-probability below which a token counts as low (low_share)",
        "tau": "token perplexity threshold of r_s (offload)",
        "rho": "offload when r_s > rho (1 disables)",
        "k": "hesitating SRM steps in a row that trigger intervention",
        "m": "LRM steps per intervention",
        "hesitation": "the hesitation words",
    },
)
