"""Settings of ``trigreason serve backend-sim``: ``TRIGREASON_SIM_*`` variables, overridden by flags."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from trigreason.proto import ConfigError
from trigreason.services.runtime import env_settings

__all__ = ["SimSettings", "StepLength"]

_PREFIX = "TRIGREASON_SIM_"


@dataclass(frozen=True, slots=True)
class StepLength:
    """Tokens per step: ``fixed:N`` (or ``N``), ``uniform:A..B`` (inclusive) or ``normal:MEAN,SD``
    (rounded, clipped to at least 1)."""

    kind: Literal["fixed", "uniform", "normal"]
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> StepLength:
        s = spec.strip().lower().replace(" ", "")
        try:
            if re.fullmatch(r"\d+", s):
                return cls._checked("fixed", float(s))
            kind, _, args = s.partition(":")
            if kind == "fixed":
                return cls._checked("fixed", float(args))
            if kind == "uniform":
                lo, _, hi = args.partition("..")
                return cls._checked("uniform", float(lo), float(hi))
            if kind == "normal":
                mean, _, sd = args.partition(",")
                return cls._checked("normal", float(mean), float(sd))
        except ValueError:
            pass
        raise ConfigError(
            f"step length {spec!r}: expected N, fixed:N, uniform:A..B or normal:MEAN,SD (e.g. uniform:20..60)"
        )

    @classmethod
    def _checked(cls, kind: Literal["fixed", "uniform", "normal"], a: float, b: float = 0.0) -> StepLength:
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError("not finite")
        if kind in ("fixed", "uniform") and (a < 1 or a != int(a) or b != int(b)):
            raise ValueError("token counts are whole numbers >= 1")
        if kind == "uniform" and b < a:
            raise ValueError("empty range")
        if kind == "normal" and (a < 1 or b < 0):
            raise ValueError("mean >= 1 and sd >= 0")
        return cls(kind, a, b)

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        return max(1, round(rng.gauss(self.a, self.b)))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{int(self.a)}"
        if self.kind == "uniform":
            return f"uniform:{int(self.a)}..{int(self.b)}"
        return f"normal:{self.a:g},{self.b:g}"


@dataclass(frozen=True, kw_only=True, slots=True)
class SimSettings:
    host: str = "127.0.0.1"
    port: int = 8090
    time_per_token_ms: float = 20.0
    prefill_ms: float = 5.0  # per request
    prefill_ms_per_token: float = 0.0  # per prompt token (about 4 characters each)
    step_tokens: StepLength = StepLength("uniform", 20, 60)
    # Log-probabilities of sampled tokens: with probability confident_p a token is confident
    # (-U(0, confident_width)), else -Exp(uncertain_rate).
    confident_p: float = 0.85
    confident_width: float = 0.02
    uncertain_rate: float = 1.0
    hesitation_p: float = 0.1  # a step starts with a hesitation word
    hesitation_words: tuple[str, ...] = ("Wait", "Hmm", "Alternatively", "Actually")
    # Once the prompt holds answer_after steps (paragraphs), each step ends the solution with
    # ``\boxed{N}`` and EOS with probability answer_p.
    answer_after: int = 8
    answer_p: float = 0.25
    error_rate: float = 0.0  # share of requests answered with 500 before any work
    concurrency: int = 1  # generations at a time; more requests wait in line
    max_top_n_tokens: int = 20
    max_stop_sequences: int = 4
    max_total_tokens: int = 32768
    default_max_new_tokens: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("time_per_token_ms", "prefill_ms", "prefill_ms_per_token", "confident_width"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("confident_p", "hesitation_p", "answer_p", "error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if not self.uncertain_rate > 0:
            raise ConfigError(f"uncertain_rate must be > 0, got {self.uncertain_rate}")
        for name in ("concurrency", "max_stop_sequences", "max_total_tokens", "default_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.answer_after < 0 or self.max_top_n_tokens < 0 or not 0 <= self.port < 65536:
            raise ConfigError("answer_after and max_top_n_tokens must be >= 0, port within 0..65535")
        if not self.hesitation_words or any(not w.strip() for w in self.hesitation_words):
            raise ConfigError("hesitation_words must be non-empty words")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> SimSettings:
        """Read ``TRIGREASON_SIM_<FIELD>`` (e.g. ``TRIGREASON_SIM_STEP_TOKENS=normal:40,10``); overrides
        that are None (a flag not given) leave the value from the environment."""
        return env_settings(
            cls, env, prefix=_PREFIX, parsers={"step_tokens": StepLength.parse}, overrides=overrides
        )
