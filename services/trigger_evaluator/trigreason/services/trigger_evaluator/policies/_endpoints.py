"""The two end points of every comparison: the LRM alone and the SRM alone."""

from __future__ import annotations

import msgspec

from trigreason.proto import DEFAULT_HESITATION

from ._registry import Policy, SrmStep, StepVerdict
from ._signals import Hesitation, hesitates

__all__ = ["LRM_ONLY", "SRM_ONLY", "LrmOnlyParams", "SrmOnlyParams"]


class LrmOnlyParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


class SrmOnlyParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    # Reported with each verdict (hesitates); never used to decide.
    hesitation: Hesitation = DEFAULT_HESITATION


def _srm_only(step: SrmStep, p: SrmOnlyParams) -> StepVerdict:
    return StepVerdict(hesitates=hesitates(step.text, p.hesitation))


LRM_ONLY = Policy(
    name="lrm-only",
    params=LrmOnlyParams,
    summary="LRM-only: the large model writes every step (the accuracy end point)",
    description=(
        "The large reasoning model writes every step; no SRM step is generated and no trigger runs. "
        "It is the accuracy and cost end point every policy is compared with."
    ),
    uses_srm=False,
    colour="#9b5de5",
    marker="D",
)

SRM_ONLY = Policy(
    name="srm-only",
    params=SrmOnlyParams,
    summary="SRM-only: the small model writes every step (the cost end point)",
    description=(
        "The small reasoning model writes every step and every one is accepted; hesitation is reported "
        "but never acted on. It is the cheap end point every policy is compared with."
    ),
    on_step=_srm_only,
    uses_lrm=False,
    colour="#2a9d8f",
    marker="^",
    param_help={"hesitation": "the hesitation words (reported only)"},
)
