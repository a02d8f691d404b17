"""Trigger definitions, table-driven; every expected value is worked out by hand from the definitions in
README.md ("The policies")."""

from __future__ import annotations

import math

import pytest

from trigreason.proto import DEFAULT_HESITATION, TokenLogprob
from trigreason.services.trigger_evaluator import confident_share, decide_trigreason, hesitates, judge_score

LN_105 = math.log(1.05)  # 0.04879...


@pytest.mark.parametrize(
    ("logprobs", "tau", "expected"),
    [
        ([], 1.05, 0.0),  # no tokens: r_s = 0
        ([0.0], 1.05, 1.0),  # PPL 1 < 1.05
        ([0.0, -0.01, -0.5, -0.04], 1.05, 0.75),  # PPL 1, 1.01005, 1.6487, 1.0408
        ([-0.0487, -0.0488], 1.05, 0.5),  # PPL 1.04990 < 1.05, 1.05000(1) is not
        ([0.0, 0.0], 1.0, 0.0),  # strict: PPL 1 is not < 1
        ([-1.0, -2.0, -0.6], 2.0, 1 / 3),  # PPL 2.718, 7.389, 1.822
        ([-5.0] * 9 + [0.0], 1.05, 0.1),
    ],
)
def test_confident_share(logprobs: list[float], tau: float, expected: float) -> None:
    assert confident_share(logprobs, tau) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Wait, that is not right.", True),
        ("Hmm. Let us see.", True),
        ("HMM", True),
        ("I await the result.", False),  # 'wait' inside a word
        ("We keep waiting.", False),
        ("Alternatively, add them.", True),
        ("actually 5", True),
        ("This is factually 5", False),
        ("but  wait", True),  # any whitespace between the words of a phrase
        ("Let me re-check the sum.", True),
        ("Let me recheck the sum.", False),
        ("3 + 4 = 7", False),
        ("", False),
    ],
)
def test_hesitates_default_set(text: str, expected: bool) -> None:
    assert hesitates(text, DEFAULT_HESITATION) is expected


def test_hesitates_custom_set_and_empty_set() -> None:
    assert hesitates("Hold on, 2+2", ["hold on"]) is True
    assert hesitates("Wait", ["hold on"]) is False
    assert hesitates("Wait", []) is False
    assert hesitates("C++ is fine", ["c++"]) is True  # punctuation-ended words still match


HES, CALM = "Wait, recompute.", "So 3 + 4 = 7."
SURE, UNSURE = [0.0] * 10, [-1.0] * 10  # r_s 1.0 and 0.0 at tau 1.05


@pytest.mark.parametrize(
    ("run_before", "text", "lps", "k", "m", "rho", "verdict", "run", "next_run", "lrm_steps"),
    [
        (0, CALM, UNSURE, 2, 1, 0.85, "accept", 0, 0, 0),
        (0, HES, UNSURE, 2, 1, 0.85, "accept", 1, 1, 0),  # one hesitation is not yet k=2
        (1, HES, UNSURE, 2, 1, 0.85, "intervene", 2, 0, 1),  # run reaches k
        (1, HES, UNSURE, 2, 3, 0.85, "intervene", 2, 0, 3),  # m LRM steps
        (1, HES, SURE, 2, 1, 0.85, "intervene", 2, 0, 1),  # both fire: intervention wins
        (1, CALM, SURE, 2, 1, 0.85, "offload", 0, 0, 1),  # calm step resets the run; r_s 1 > 0.85
        (0, CALM, SURE, 2, 1, 1.0, "accept", 0, 0, 0),  # rho = 1 disables offload
        (0, HES, UNSURE, 1, 1, 0.85, "intervene", 1, 0, 1),  # k = 1
        (5, CALM, UNSURE, 2, 1, 0.85, "accept", 0, 0, 0),
    ],
)
def test_decide_trigreason(
    run_before: int, text: str, lps: list[float], k: int, m: int, rho: float,
    verdict: str, run: int, next_run: int, lrm_steps: int,
) -> None:  # fmt: skip
    d = decide_trigreason(
        text=text, token_logprobs=lps, hesitation_run=run_before, tau=1.05, rho=rho, k=k, m=m,
        hesitation=DEFAULT_HESITATION,
    )  # fmt: skip
    assert (d.verdict, d.run, d.next_run, d.lrm_steps) == (verdict, run, next_run, lrm_steps)


@pytest.mark.parametrize(
    ("confident", "total", "verdict"),
    [(17, 20, "accept"), (18, 20, "offload")],  # r_s = 0.85 does not fire (strict); 0.9 does
)
def test_offload_threshold_is_strict(confident: int, total: int, verdict: str) -> None:
    lps = [0.0] * confident + [-1.0] * (total - confident)
    d = decide_trigreason(
        text="x", token_logprobs=lps, hesitation_run=0, tau=1.05, rho=0.85, k=2, m=1, hesitation=()
    )
    assert d.verdict == verdict


def _top(*pairs: tuple[str, float]) -> list[TokenLogprob]:
    return [TokenLogprob(t, math.log(p)) for t, p in pairs]


@pytest.mark.parametrize(
    ("top", "mode", "expected"),
    [
        (_top(("8", 0.6), ("7", 0.3), ("x", 0.1)), "greedy", 8.0),
        (_top(("8", 0.6), ("7", 0.3), ("x", 0.1)), "expected", (8 * 0.6 + 7 * 0.3) / 0.9),
        (_top(("3", 0.4), (" 9", 0.35), ("9", 0.25)), "greedy", 9.0),  # " 9" and "9" pool to 0.6
        (_top(("The", 0.9), ("A", 0.1)), "greedy", None),  # no digit at all
        (_top(("10", 0.9), ("2", 0.1)), "expected", 2.0),  # "10" is not a single digit
    ],
)
def test_judge_score(top: list[TokenLogprob], mode: str, expected: float | None) -> None:
    score = judge_score(top, mode)  # type: ignore[arg-type]
    if expected is None:
        assert score is None
    else:
        assert score == pytest.approx(expected)
