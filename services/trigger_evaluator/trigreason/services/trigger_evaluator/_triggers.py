"""Trigger policies as pure functions of a step and its context (DESIGN, "Triggers, exactly")."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Literal

from msgspec import Struct

from trigreason.proto import JudgeMode, TokenLogprob

__all__ = [
    "TriggerDecision",
    "confident_share",
    "decide_trigreason",
    "hesitates",
    "judge_score",
    "random_offload",
]

StepVerdict = Literal["accept", "offload", "intervene"]


def confident_share(token_logprobs: Sequence[float], tau: float) -> float:
    """``r_s``: the share of tokens whose perplexity ``exp(-logprob)`` is strictly below ``tau``.

    Compared in log space, ``logprob > -log(tau)``: ``exp(-logprob)`` overflows for log-probabilities
    below -709, and servers report -9999.0 (vLLM) or -inf for an impossible token. Such a token, and a NaN,
    is not confident. A step with no tokens has ``r_s = 0``.
    """
    if not token_logprobs:
        return 0.0
    threshold = -math.log(tau)
    confident = sum(1 for lp in token_logprobs if lp > threshold)
    return confident / len(token_logprobs)


@lru_cache(maxsize=64)
def _hesitation_regex(words: tuple[str, ...]) -> re.Pattern[str] | None:
    if not words:
        return None
    # Longest first so "but wait" is preferred over "wait"; inner spaces match any whitespace run.
    alternatives = sorted((w.strip() for w in words if w.strip()), key=len, reverse=True)
    if not alternatives:
        return None
    body = "|".join(r"\s+".join(map(re.escape, w.split())) for w in alternatives)
    # Word boundaries by look-around, which also work for words that start or end in punctuation.
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


def hesitates(text: str, words: Iterable[str]) -> bool:
    """Whether ``text`` contains a word of the hesitation set (case-insensitive, on word boundaries)."""
    pattern = _hesitation_regex(tuple(words))
    return pattern is not None and pattern.search(text) is not None


class TriggerDecision(Struct, frozen=True, kw_only=True):
    verdict: StepVerdict
    r_s: float
    hesitates: bool
    # Consecutive hesitating SRM steps counting this one (the value that reached k on ``intervene``).
    run: int
    # The run the next SRM step starts from: 0 after any replace verdict, since the LRM writes next.
    next_run: int
    # How many LRM steps a replace verdict asks for (0 for accept).
    lrm_steps: int


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
