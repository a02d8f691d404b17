"""Two policies on the same (problem, sample) pairs: the exact McNemar test, the verdict it allows, and an
exact small-sample interval for the difference of accuracies. Pure arithmetic, no randomness.

Only the discordant pairs carry evidence: ``b`` (the first right, the second wrong) and ``c`` (the
opposite). Under "no difference" each discordant pair falls either way with probability 1/2, so the exact
two-sided p-value is a binomial tail. A verdict names a winner only when p < ``alpha``; otherwise it says
"no difference shown" and how many discordant pairs, split as observed, would have reached p < ``alpha``.
"""

from __future__ import annotations

import math

import msgspec

__all__ = [
    "ALPHA",
    "INTERVAL_METHOD",
    "VERDICT_RULE",
    "PairedVerdict",
    "discordant_pairs_needed",
    "mcnemar_exact_p",
    "paired_difference_interval",
    "paired_verdict",
]

ALPHA = 0.05
VERDICT_RULE = "exact McNemar test on the discordant pairs, two-sided, alpha 0.05"
INTERVAL_METHOD = (
    "exact, conditional on the discordant pairs: Clopper-Pearson 95% for their split, times their share; "
    "holds 0 exactly when the exact McNemar p >= 0.05"
)
_NEEDED_CAP = 100_000  # beyond this many discordant pairs the answer is "more than that"


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (a binomial test at 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail: float = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def _minority_at(m: int, minority: int, n: int) -> int:
    """The smaller count among ``m`` discordant pairs split as ``minority`` of ``n`` (rounded half up)."""
    return (2 * m * minority + n) // (2 * n)


def discordant_pairs_needed(b: int, c: int, *, alpha: float = ALPHA) -> int | None:
    """The fewest discordant pairs, split between the two sides as ``b`` : ``c`` are, whose exact McNemar
    p falls below ``alpha``; when ``b`` vs ``c`` is not significant, the fewest above ``b + c``. None when
    no number would do: no discordant pairs, an even split, or more than 100,000 pairs.

    Walks the binomial tail ``P(X_m <= k)`` for ``X_m ~ Bin(m, 1/2)`` one ``m`` at a time, each step O(1):
    ``P(X_m <= k) = P(X_{m-1} <= k) - P(X_{m-1} = k) / 2``, and ``k`` rises by at most one per step."""
    n = b + c
    minority = min(b, c)
    if n == 0 or 2 * minority == n:
        return None
    start = n + 1 if mcnemar_exact_p(b, c) >= alpha else 1
    k, pmf, cdf = 0, 1.0, 1.0  # m = 0: P(X_0 = 0) = P(X_0 <= 0) = 1
    for m in range(1, _NEEDED_CAP + 1):
        cdf -= pmf / 2  # P(X_m <= k) from m - 1
        pmf = pmf * m / (2 * (m - k))  # P(X_m = k)
        k_next = _minority_at(m, minority, n)
        if k_next > k:  # at most one more, since the minority's share is below 1/2
            k = k_next
            pmf = pmf * (m - k + 1) / k
            cdf += pmf
        if m >= start and 2 * cdf < alpha:
            return m
    return None


def _upper_tail(x: int, n: int, q: float) -> float:
    """P(X >= x) for X ~ Bin(n, q)."""
    return math.fsum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(x, n + 1))


def _clopper_pearson(x: int, n: int, alpha: float) -> tuple[float, float]:
    """The exact interval for a binomial proportion: the ``q`` where each one-sided tail is ``alpha / 2``."""

    def solve(x_at_least: int, target: float) -> float:
        lo, hi = 0.0, 1.0  # P(X >= x_at_least) rises with q: bisect for where it meets target
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _upper_tail(x_at_least, n, mid) < target else (lo, mid)
        return (lo + hi) / 2

    # lower: P(X >= x) = alpha / 2; upper: P(X <= x) = alpha / 2, that is P(X >= x + 1) = 1 - alpha / 2
    low = 0.0 if x == 0 else solve(x, alpha / 2)
    high = 1.0 if x == n else solve(x + 1, 1 - alpha / 2)
    return low, high


def paired_difference_interval(b: int, c: int, pairs: int, *, alpha: float = ALPHA) -> tuple[float, float]:
    """An exact interval for the paired difference of accuracies ``(b - c) / pairs``, conditional on the
    number of discordant pairs: the Clopper-Pearson interval of the share ``b / (b + c)``, mapped through
    ``(b + c) / pairs x (2 share - 1)``. It holds 0 exactly when the exact McNemar p is >= ``alpha``, so
    the description never says more than the test. [0, 0] when no pair is discordant."""
    n = b + c
    if n == 0:
        return 0.0, 0.0
    low, high = _clopper_pearson(b, n, alpha)
    scale = n / pairs
    return scale * (2 * low - 1), scale * (2 * high - 1)


class PairedVerdict(msgspec.Struct, kw_only=True, frozen=True):
    p: float
    significant: bool  # p < alpha and the direction is the paired difference's
    discordant_pairs_needed: int | None
    text: str


def paired_verdict(
    b: int, c: int, *, first: str, second: str, setting: str = "", alpha: float = ALPHA
) -> PairedVerdict:
    """``first`` against ``second`` with ``b`` pairs only ``first`` got right and ``c`` only ``second``:
    "X beats Y" when the exact McNemar p < ``alpha``; otherwise "no difference shown", with what it would
    take. ``setting`` follows the winner's sentence (e.g. "at the same replaced share")."""
    p = mcnemar_exact_p(b, c)
    needed = discordant_pairs_needed(b, c, alpha=alpha)
    where = f" {setting}" if setting else ""
    counts = f"{b} vs {c} discordant pairs"
    if p < alpha and b != c:
        winner, loser = (first, second) if b > c else (second, first)
        text = f"{winner} beats {loser}{where} (exact McNemar p {p:.3g} < {alpha:g}, {counts})"
        return PairedVerdict(p=p, significant=True, discordant_pairs_needed=needed, text=text)
    if b + c == 0:
        why = "no discordant pairs: on every pair both were right or both wrong"
    elif b == c:
        why = f"exact McNemar p {p:.3g}, {counts}: an even split, which no number of pairs makes a difference"
    elif needed is None:
        why = f"exact McNemar p {p:.3g}, {counts}; over {_NEEDED_CAP:,} at this split would be needed"
    else:
        why = f"exact McNemar p {p:.3g}, {counts}; {needed} at this split would reach p < {alpha:g}"
    text = f"no difference shown ({why})"
    return PairedVerdict(p=p, significant=False, discordant_pairs_needed=needed, text=text)
