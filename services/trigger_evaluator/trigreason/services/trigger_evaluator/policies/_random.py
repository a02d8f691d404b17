"""The matched random baseline: TrigReason's priming, then each SRM step replaced with a fixed probability."""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec
from msgspec import Meta

from trigreason.proto import DEFAULT_HESITATION

from ._registry import Policy, SrmStep, StepVerdict
from ._signals import Hesitation, confident_share, hesitates

__all__ = ["POLICY", "RandomParams", "random_offload"]


class RandomParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    priming_steps: Annotated[int, Meta(ge=0, le=4096)] = 20
    offload_p: Annotated[float, Meta(ge=0, le=1)] = 0.0
    # Reported with each verdict (r_s, hesitates) for comparison with TrigReason; never used to decide.
    tau: Annotated[float, Meta(gt=0, le=1e6)] = 1.05
    hesitation: Hesitation = DEFAULT_HESITATION


def random_offload(*, seed: int, step_index: int, attempt: int, offload_p: float) -> bool:
    """The random baseline's verdict on one SRM step: replace it with probability ``offload_p``.

    The draw is a pure function of the session's seed, the step and the attempt (no global random state),
    so a session replays identically, and two sessions with the same seed replace the same steps."""
    if offload_p <= 0.0:
        return False
    if offload_p >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}:{step_index}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < offload_p


def _on_step(step: SrmStep, p: RandomParams) -> StepVerdict:
    replace = random_offload(
        seed=step.seed, step_index=step.index, attempt=step.attempt, offload_p=p.offload_p
    )
    return StepVerdict(
        replace=replace,
        lrm_steps=1 if replace else 0,
        reason="random" if replace else None,
        r_s=confident_share(step.token_logprobs, p.tau),
        hesitates=hesitates(step.text, p.hesitation),
    )


POLICY = Policy(
    name="random",
    params=RandomParams,
    summary="Random router: TrigReason's priming, then each SRM step replaced with probability offload_p",
    description=(
        "The baseline any trigger must beat at a matched budget. After the same priming as TrigReason, "
        "each SRM step is replaced by an LRM step with probability offload_p, drawn from the session's "
        "seed, the step index and the attempt (reproducible, no global random state). r_s and hesitation "
        "are reported with each verdict for comparison, never used to decide. eval --matched-random sets "
        "offload_p to the share of SRM steps TrigReason replaced."
    ),
    primes=True,
    on_step=_on_step,
    triggers=("random",),
    in_default_eval=False,
    colour="#6c757d",
    marks={"random": "X"},
    badges={"random": "random (offload_p {offload_p})"},
    marker="X",
    param_help={
        "priming_steps": "n: LRM steps at the start",
        "offload_p": "probability that an SRM step is replaced",
        "tau": "token perplexity threshold of the reported r_s",
        "hesitation": "the hesitation words (reported only)",
    },
)
