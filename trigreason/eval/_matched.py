"""Do the triggers beat chance? TrigReason against the random baseline that hands the LRM the same share
of SRM steps, paired problem by problem (same problem, same sample, same seed).

``replaced_share`` is the share of SRM steps TrigReason replaced on a data set: the random baseline's
``offload_p``. ``matched_comparison`` reports accuracy of both, the paired difference (TrigReason right and
random wrong, against the opposite), a 95 % interval for the difference of accuracies from a paired
bootstrap with a fixed seed, and the exact McNemar test's two-sided p-value."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import msgspec

from trigreason.proto import SessionStats

from ._rows import Row

__all__ = [
    "REPLACING_TRIGGERS",
    "MatchedComparison",
    "matched_comparison",
    "mcnemar_exact_p",
    "replaced_share",
]

# The triggers that discard an SRM step and hand it to the LRM (priming replaces nothing).
REPLACING_TRIGGERS = ("offload", "intervention", "judge_reject", "random")
_BOOTSTRAP_RESAMPLES = 4000


class MatchedComparison(msgspec.Struct, kw_only=True, frozen=True):
    """``summary.json``'s ``trigreason_vs_random`` (fields in docs/evaluation.md)."""

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


def replaced_share(stats: Iterable[SessionStats]) -> float:
    """Replaced SRM steps over SRM steps attempted (replaced + committed), over all runs."""
    replaced = committed = 0
    for s in stats:
        replaced += sum(s.triggers.get(kind, 0) for kind in REPLACING_TRIGGERS)
        committed += s.srm_steps
    return replaced / (replaced + committed) if replaced + committed else 0.0


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (a binomial test at 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail: float = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def matched_comparison(rows: list[Row], *, seed: int = 0) -> MatchedComparison | None:
    """TrigReason against random over the (problem, sample) pairs both ran; None when there are none."""
    by_key: dict[str, dict[tuple[str, int], bool]] = {"trigreason": {}, "random": {}}
    for row in rows:
        if row.policy in by_key:
            by_key[row.policy][(row.problem_id, row.sample)] = row.correct
    pairs = sorted(set(by_key["trigreason"]) & set(by_key["random"]))
    if not pairs:
        return None
    outcomes = [(by_key["trigreason"][k], by_key["random"][k]) for k in pairs]
    n = len(outcomes)
    b = sum(1 for t, r in outcomes if t and not r)  # TrigReason right, random wrong
    c = sum(1 for t, r in outcomes if r and not t)  # the opposite
    diffs = [int(t) - int(r) for t, r in outcomes]
    rng = random.Random(seed)
    boot = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(_BOOTSTRAP_RESAMPLES))
    low = boot[int(0.025 * _BOOTSTRAP_RESAMPLES)]
    high = boot[int(0.975 * _BOOTSTRAP_RESAMPLES) - 1]
    tr_rows = [r for r in rows if r.policy == "trigreason"]
    rnd_rows = [r for r in rows if r.policy == "random"]
    return MatchedComparison(
        pairs=n,
        trigreason_accuracy=sum(t for t, _ in outcomes) / n,
        random_accuracy=sum(r for _, r in outcomes) / n,
        trigreason_replaced_share=replaced_share(r.stats for r in tr_rows),
        random_replaced_share=replaced_share(r.stats for r in rnd_rows),
        random_offload_p=rnd_rows[0].params.offload_p if rnd_rows else None,
        trigreason_right_random_wrong=b,
        random_right_trigreason_wrong=c,
        accuracy_difference=sum(diffs) / n,
        accuracy_difference_ci95=(low, high),
        mcnemar_p=mcnemar_exact_p(b, c),
        verdict=_verdict(low, high),
    )


def _verdict(low: float, high: float) -> str:
    if low > 0:
        return "trigreason beats random at the same replaced share"
    if high < 0:
        return "random beats trigreason at the same replaced share"
    return "no better than chance on this data (the interval holds 0)"
