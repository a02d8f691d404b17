"""The signals policies read from an SRM step: confidence (``r_s``) and hesitation (defined in README.md,
"The policies")."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Annotated, Literal

from msgspec import Meta, Struct

__all__ = ["Hesitation", "TriggerDecision", "confident_share", "hesitates"]

_Decision = Literal["accept", "offload", "intervene"]
# A hesitation set as a parameter: up to 64 words or phrases of up to 64 characters.
Hesitation = Annotated[tuple[Annotated[str, Meta(min_length=1, max_length=64)], ...], Meta(max_length=64)]


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
    verdict: _Decision
    r_s: float
    hesitates: bool
    # Consecutive hesitating SRM steps counting this one (the value that reached k on ``intervene``).
    run: int
    # The run the next SRM step starts from: 0 after any replace verdict, since the LRM writes next.
    next_run: int
    # How many LRM steps a replace verdict asks for (0 for accept).
    lrm_steps: int
