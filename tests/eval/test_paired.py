"""The matched comparison's statistics: the exact McNemar verdict at 0.05, what it would take, and the
exact interval that never says more than the test. The worked examples of issue 26, table-driven."""

from __future__ import annotations

import math

import pytest

from trigreason.eval import (
    discordant_pairs_needed,
    mcnemar_exact_p,
    paired_difference_interval,
    paired_verdict,
)

SETTING = "at the same replaced share"


@pytest.mark.parametrize(
    ("b", "c", "pairs", "p", "shown", "verdict", "needed"),
    [
        # 4 discordant pairs, all random's: the most lopsided split of 4 cannot reach 0.05 (issue 26).
        (0, 4, 20, 0.125, False, "no difference shown (exact McNemar p 0.125, 0 vs 4 discordant pairs; "
         "6 at this split would reach p < 0.05)", 6),
        # 6 of them can: 2 / 2**6.
        (0, 6, 20, 0.03125, True, "random beats trigreason at the same replaced share (exact McNemar p "
         "0.0312 < 0.05, 0 vs 6 discordant pairs)", 6),
        (6, 0, 20, 0.03125, True, "trigreason beats random at the same replaced share (exact McNemar p "
         "0.0312 < 0.05, 6 vs 0 discordant pairs)", 6),
        # Nearly even: p 1, and only a very large number of pairs at this split would show a difference.
        (9, 8, 100, 1.0, False, "no difference shown (exact McNemar p 1, 9 vs 8 discordant pairs; 1123 at "
         "this split would reach p < 0.05)", 1123),
        # Every pair concordant: nothing to test.
        (0, 0, 20, 1.0, False, "no difference shown (no discordant pairs: on every pair both were right or "
         "both wrong)", None),
        (5, 5, 20, 1.0, False, "no difference shown (exact McNemar p 1, 5 vs 5 discordant pairs: an even "
         "split, which no number of pairs makes a difference)", None),
        # 12 vs 2: already shown; at this split 9 pairs (8 vs 1 once rounded) would have been enough.
        (12, 2, 30, 2 * sum(math.comb(14, i) for i in range(3)) / 2**14, True,
         "trigreason beats random at the same replaced share (exact McNemar p 0.0129 < 0.05, 12 vs 2 "
         "discordant pairs)", 9),
    ],
)  # fmt: skip
def test_the_verdict_follows_the_exact_test(
    b: int, c: int, pairs: int, p: float, shown: bool, verdict: str, needed: int | None
) -> None:
    v = paired_verdict(b, c, first="trigreason", second="random", setting=SETTING)
    assert v.p == pytest.approx(p)
    assert v.significant is shown
    assert v.text == verdict
    assert v.discordant_pairs_needed == needed
    low, high = paired_difference_interval(b, c, pairs)
    assert low <= (b - c) / pairs <= high
    # The described interval holds 0 exactly when the test shows no difference.
    assert (low <= 0 <= high) is (not shown)


def _p_at_split(m: int, b: int, c: int) -> float:
    minority = (2 * m * min(b, c) + b + c) // (2 * (b + c))  # rounded half up, as the search rounds
    return mcnemar_exact_p(minority, m - minority)


@pytest.mark.parametrize(("b", "c"), [(0, 4), (1, 5), (3, 10), (9, 8), (2, 7), (7, 2), (40, 25), (1, 2)])
def test_discordant_pairs_needed_is_the_first_count_past_the_observed_one_that_reaches_005(
    b: int, c: int
) -> None:
    needed = discordant_pairs_needed(b, c)
    assert needed is not None
    assert needed > b + c  # none of these is significant yet
    assert _p_at_split(needed, b, c) < 0.05
    # by brute force with exact integer arithmetic: no count in between reaches it
    assert all(_p_at_split(m, b, c) >= 0.05 for m in range(b + c + 1, needed))


@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [
        (0, 4, 0.0, 1 - 0.025 ** (1 / 4)),  # closed forms at the edges
        (4, 4, 0.025 ** (1 / 4), 1.0),
        (3, 10, 0.0667395, 0.6524529),  # Clopper-Pearson for 3 of 10 (published tables)
    ],
)
def test_the_interval_is_clopper_pearson_on_the_split_scaled_by_the_discordant_share(
    x: int, n: int, low: float, high: float
) -> None:
    pairs = 2 * n
    got = paired_difference_interval(x, n - x, pairs)
    scale = n / pairs
    assert got == pytest.approx((scale * (2 * low - 1), scale * (2 * high - 1)), abs=1e-6)


def test_the_issue_26_example_no_longer_overclaims() -> None:
    """TrigReason 9/20, random 13/20, 4 discordant pairs all random's: the bootstrap said "random beats
    trigreason" from [-0.400, -0.050]; the exact test says no difference shown, and the interval agrees."""
    low, high = paired_difference_interval(0, 4, 20)
    assert low == pytest.approx(-0.2)
    assert high == pytest.approx(0.2 * (2 * (1 - 0.025**0.25) - 1))
    assert high > 0
