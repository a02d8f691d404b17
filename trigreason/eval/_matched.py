"""Do the triggers beat chance? TrigReason against the random baseline that hands the LRM the same share
of SRM steps, paired problem by problem (same problem, same sample, same seed).

``replaced_share`` is the share of SRM steps TrigReason replaced on a data set: the random baseline's
``offload_p``. ``matched_comparison`` reports accuracy of both, the paired difference (TrigReason right and
random wrong, against the opposite), the exact McNemar test's two-sided p-value and the verdict it allows
at 0.05 (see ``_paired``), and an exact 95 % interval for the difference of accuracies that agrees with
the test."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from trigreason.proto import SessionStats, flat_params

from ._paired import (
    ALPHA,
    INTERVAL_METHOD,
    VERDICT_RULE,
    mcnemar_exact_p,
    paired_difference_interval,
    paired_verdict,
)
from ._rows import Row

__all__ = [
    "REPLACING_TRIGGERS",
    "MatchedComparison",
    "matched_comparison",
    "mcnemar_exact_p",
    "replaced_share",
]

# The triggers that discard an SRM step and hand it to the LRM (priming replaces nothing).
REPLACING_TRIGGERS = ("offload", "intervention", "judge_reject", "random", "unlikely")


class MatchedComparison(msgspec.Struct, kw_only=True, frozen=True):
    """``summary.json``'s ``trigreason_vs_random`` and each entry of ``vs_random`` (fields in
    docs/evaluation.md). The ``policy_*`` fields are those of ``policy``, the policy compared with random;
    the ``trigreason_*`` fields hold the same values under the names files had before other policies
    could be compared, and are still written so that readers of those names keep working."""

    pairs: int
    trigreason_accuracy: float
    random_accuracy: float
    trigreason_replaced_share: float
    random_replaced_share: float
    random_offload_p: float | None
    trigreason_right_random_wrong: int
    random_right_trigreason_wrong: int
    accuracy_difference: float
    accuracy_difference_ci95: tuple[float, float]
    mcnemar_p: float
    verdict: str
    # How the verdict and the interval were reached (added with the exact rule; defaults for old files).
    significant: bool = False
    alpha: float = ALPHA
    discordant_pairs_needed: int | None = None
    verdict_rule: str = VERDICT_RULE
    accuracy_difference_ci95_method: str = INTERVAL_METHOD
    # The policy compared with random (eval --matched-random --matched-to; added with likelihood).
    policy: str = "trigreason"
    # The policy-neutral names (added with likelihood). A file written before them decodes with the
    # sentinels below, which __post_init__ replaces with the trigreason_* values.
    policy_accuracy: float = -1.0
    policy_replaced_share: float = -1.0
    policy_right_random_wrong: int = -1
    random_right_policy_wrong: int = -1

    def __post_init__(self) -> None:
        for new, old in _LEGACY_NAMES:
            if getattr(self, new) < 0:
                msgspec.structs.force_setattr(self, new, getattr(self, old))


_LEGACY_NAMES = (
    ("policy_accuracy", "trigreason_accuracy"),
    ("policy_replaced_share", "trigreason_replaced_share"),
    ("policy_right_random_wrong", "trigreason_right_random_wrong"),
    ("random_right_policy_wrong", "random_right_trigreason_wrong"),
)


def replaced_share(stats: Iterable[SessionStats]) -> float:
    """Replaced SRM steps over SRM steps attempted (replaced + committed), over all runs."""
    replaced = committed = 0
    for s in stats:
        replaced += sum(s.triggers.get(kind, 0) for kind in REPLACING_TRIGGERS)
        committed += s.srm_steps
    return replaced / (replaced + committed) if replaced + committed else 0.0


def matched_comparison(rows: list[Row], policy: str = "trigreason") -> MatchedComparison | None:
    """``policy`` against random over the (problem, sample) pairs both ran; None when there are none."""
    by_key: dict[str, dict[tuple[str, int], bool]] = {policy: {}, "random": {}}
    for row in rows:
        if row.policy in by_key:
            by_key[row.policy][(row.problem_id, row.sample)] = row.correct
    pairs = sorted(set(by_key[policy]) & set(by_key["random"]))
    if not pairs:
        return None
    outcomes = [(by_key[policy][k], by_key["random"][k]) for k in pairs]
    n = len(outcomes)
    b = sum(1 for t, r in outcomes if t and not r)  # the policy right, random wrong
    c = sum(1 for t, r in outcomes if r and not t)  # the opposite
    verdict = paired_verdict(b, c, first=policy, second="random", setting="at the same replaced share")
    policy_rows = [r for r in rows if r.policy == policy]
    rnd_rows = [r for r in rows if r.policy == "random"]
    accuracy = sum(t for t, _ in outcomes) / n
    share = replaced_share(r.stats for r in policy_rows)
    return MatchedComparison(
        pairs=n,
        policy_accuracy=accuracy,
        trigreason_accuracy=accuracy,
        random_accuracy=sum(r for _, r in outcomes) / n,
        policy_replaced_share=share,
        trigreason_replaced_share=share,
        random_replaced_share=replaced_share(r.stats for r in rnd_rows),
        random_offload_p=flat_params(rnd_rows[0].params).get("offload_p") if rnd_rows else None,
        policy_right_random_wrong=b,
        random_right_policy_wrong=c,
        trigreason_right_random_wrong=b,
        random_right_trigreason_wrong=c,
        accuracy_difference=(b - c) / n,
        accuracy_difference_ci95=paired_difference_interval(b, c, n),
        mcnemar_p=mcnemar_exact_p(b, c),
        verdict=verdict.text,
        significant=verdict.significant,
        discordant_pairs_needed=verdict.discordant_pairs_needed,
        policy=policy,
    )
