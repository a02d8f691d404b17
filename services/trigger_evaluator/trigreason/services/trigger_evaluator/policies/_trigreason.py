"""TrigReason (the paper's policy): priming, cognitive offload and intervention requests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Protocol

import msgspec
from msgspec import Meta

from trigreason.proto import DEFAULT_HESITATION

from ._registry import Policy, SrmStep, StepVerdict
from ._signals import Hesitation, TriggerDecision, confident_share, hesitates

__all__ = [
    "POLICY",
    "SrmTriggerParams",
    "TrigReasonParams",
    "decide_trigreason",
    "srm_triggers",
    "trigger_verdict",
]


class TrigReasonParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    priming_steps: Annotated[int, Meta(ge=0, le=4096)] = 20
    tau: Annotated[float, Meta(gt=0, le=1e6)] = 1.05
    rho: Annotated[float, Meta(ge=0, le=1)] = 0.85
    k: Annotated[int, Meta(ge=1, le=1024)] = 2
    m: Annotated[int, Meta(ge=1, le=1024)] = 1
    hesitation: Hesitation = DEFAULT_HESITATION


def decide_trigreason(
    *,
    text: str,
    token_logprobs: Sequence[float],
    hesitation_run: int,
    tau: float,
    rho: float,
    k: int,
    m: int,
    hesitation: Iterable[str],
) -> TriggerDecision:
    """TrigReason's verdict on one SRM step.

    Offload fires when ``r_s > rho``; intervention when the hesitation run reaches ``k``. If both fire,
    intervention wins: it replaces the step and hands the LRM ``m`` steps.
    """
    r_s = confident_share(token_logprobs, tau)
    hes = hesitates(text, hesitation)
    run = hesitation_run + 1 if hes else 0
    if run >= k:
        return TriggerDecision(verdict="intervene", r_s=r_s, hesitates=hes, run=run, next_run=0, lrm_steps=m)
    if r_s > rho:
        return TriggerDecision(verdict="offload", r_s=r_s, hesitates=hes, run=run, next_run=0, lrm_steps=1)
    return TriggerDecision(verdict="accept", r_s=r_s, hesitates=hes, run=run, next_run=run, lrm_steps=0)


class SrmTriggerParams(Protocol):
    """The parameters of TrigReason's SRM-side triggers, which other policies may carry too."""

    @property
    def tau(self) -> float: ...
    @property
    def rho(self) -> float: ...
    @property
    def k(self) -> int: ...
    @property
    def m(self) -> int: ...
    @property
    def hesitation(self) -> tuple[str, ...]: ...


def srm_triggers(step: SrmStep, p: SrmTriggerParams) -> TriggerDecision:
    """TrigReason's offload and intervention triggers on one SRM step, with the parameters of ``p``."""
    return decide_trigreason(
        text=step.text,
        token_logprobs=step.token_logprobs,
        hesitation_run=step.hesitation_run,
        tau=p.tau,
        rho=p.rho,
        k=p.k,
        m=p.m,
        hesitation=p.hesitation,
    )


def trigger_verdict(d: TriggerDecision) -> StepVerdict:
    """The step verdict of a TrigReason decision: replace on offload or intervention, else accept."""
    replace = d.verdict != "accept"
    return StepVerdict(
        replace=replace,
        lrm_steps=d.lrm_steps,
        reason=None if not replace else ("intervention" if d.verdict == "intervene" else "offload"),
        r_s=d.r_s,
        hesitates=d.hesitates,
        hesitation_run=d.next_run,
        label=d.verdict,  # accept | offload | intervene
    )


def _on_step(step: SrmStep, p: TrigReasonParams) -> StepVerdict:
    return trigger_verdict(srm_triggers(step, p))


POLICY = Policy(
    name="trigreason",
    params=TrigReasonParams,
    summary="TrigReason: LRM priming, then offload on confident SRM steps and intervention on hesitation",
    description=(
        "The LRM writes the first priming_steps steps (strategic priming). Each SRM step is then checked: "
        "its share r_s of tokens with perplexity exp(-logprob) below tau is its confidence, and r_s > rho "
        "discards it for an LRM step (cognitive offload; rho = 1 disables it). A step hesitates when it "
        "holds a word of the hesitation set; k hesitating SRM steps in a row discard the current one and "
        "hand the LRM the next m steps (intervention request, which wins when both fire)."
    ),
    primes=True,
    on_step=_on_step,
    triggers=("offload", "intervention"),
    badges={
        "offload": "offload r_s {r_s:.2f} > ρ {rho}",
        "intervention": "intervention: hesitation run {run} ≥ k {k}",
    },
    accept_badge=("rs", "r_s {r_s:.2f} ≤ ρ {rho}"),
    colour="#e63946",
    marker="o",
    param_help={
        "priming_steps": "n: LRM steps at the start",
        "tau": "token perplexity threshold",
        "rho": "offload when r_s > rho (1 disables)",
        "k": "hesitating SRM steps in a row that trigger intervention",
        "m": "LRM steps per intervention",
        "hesitation": "the hesitation words",
    },
)
