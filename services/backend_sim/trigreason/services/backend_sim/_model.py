"""The simulated model: a deterministic stream of steps with configurable lengths, log-probabilities,
hesitations and final answers. No language model; the text only has the shape the bus reacts to."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from ._settings import SimSettings

__all__ = ["SimGeneration", "SimParams", "SimToken", "Simulator"]

FinishReason = Literal["length", "eos_token", "stop_sequence"]

_EOS = "</s>"
_STEP_END = "\n\n"
_DIGITS = tuple(str(d) for d in range(10))
_STARTS = ("So", "We", "Then", "Now", "Let", "First", "Next", "Thus", "Here", "Note")
_WORDS = (
    " we", " have", " the", " sum", " of", " x", " y", " and", " is", " so", " compute", " value",
    " number", " each", " term", " gives", " equals", " that", " which", " total", " square", " root",
    " times", " plus", " minus", " divide", " by", " both", " sides", " check", " it", " this", " case",
    " step", " result", " 1", " 2", " 3", " 4", " 5", " 7", " 12", " =", " +", ",", ".",
)  # fmt: skip
_ANSWER = (" The", " answer", " is", " \\boxed{")


@dataclass(frozen=True, slots=True)
class SimToken:
    id: int
    text: str
    logprob: float
    special: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class SimParams:
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_n_tokens: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class SimGeneration:
    text: str  # without the stop sequence that ended it, as trigreason's tgi-cpu returns it
    tokens: tuple[SimToken, ...]
    top_tokens: tuple[tuple[SimToken, ...], ...]  # per token, when top_n_tokens > 0
    finish_reason: FinishReason
    seed: int | None
    input_length: int


def _seed(*parts: object) -> int:
    # Python's hash() is salted per process; a digest keeps runs reproducible across processes.
    digest = hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Simulator:
    """Generates one request's tokens; the same settings, prompt and parameters give the same tokens."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        words = tuple(dict.fromkeys((_EOS, _STEP_END, *_DIGITS, "}.", *_ANSWER, *_STARTS, *_WORDS)))
        hesitations = tuple(w for w in dict.fromkeys(settings.hesitation_words) if w not in words)
        self.vocab: tuple[str, ...] = words + hesitations
        self._ids = {text: i for i, text in enumerate(self.vocab)}

    @staticmethod
    def input_length(inputs: str) -> int:
        return max(1, math.ceil(len(inputs) / 4))  # about 4 characters per token

    def prefill(self, inputs: str) -> tuple[tuple[int, str, float | None], ...]:
        """The prompt's tokens (4-character pieces, as ``input_length`` counts them) with log-probabilities
        drawn from the configured distribution, for ``decoder_input_details``: reproducible per piece and
        position, so a prompt's prefix scores the same in a longer prompt. The first has none (as TGI)."""
        out: list[tuple[int, str, float | None]] = []
        for i in range(0, max(1, len(inputs)), 4):
            piece = inputs[i : i + 4]
            rng = random.Random(_seed(self.settings.seed, i, piece))
            out.append((_seed(piece) % 100_000, piece, None if i == 0 else self._logprob(rng)))
        return tuple(out)

    def generate(self, inputs: str, params: SimParams) -> SimGeneration:
        s = self.settings
        rng = random.Random(_seed(s.seed, params.seed, inputs))
        alt_rng = random.Random(_seed(s.seed, params.seed, inputs, "top"))
        if params.max_new_tokens == 1 and params.top_n_tokens > 0:
            return self._judge(inputs, params, rng)
        stops = tuple(x for x in params.stop if x)
        longest = max((len(x) for x in stops), default=0)
        text = ""
        tokens: list[SimToken] = []
        tops: list[tuple[SimToken, ...]] = []
        finish: FinishReason = "length"
        # The answer depends on the prompt's first paragraph (the question) only, so every step of one
        # session names the same N.
        answer = _seed(s.seed, inputs.split(_STEP_END, 1)[0]) % 1000
        stream = self._texts(rng, steps_before=inputs.count(_STEP_END), answer=answer)
        for piece in stream:
            if len(tokens) == params.max_new_tokens:
                break
            token = SimToken(self._ids[piece], piece, self._logprob(rng), special=piece == _EOS)
            tokens.append(token)
            if params.top_n_tokens:
                tops.append(self._alternatives(token, params.top_n_tokens, alt_rng))
            if token.special:
                finish = "eos_token"
                break
            searched_from = max(0, len(text) - longest + 1)
            text += piece
            hits = [i for i in (text.find(x, searched_from) for x in stops) if i >= 0]
            if hits:
                text = text[: min(hits)]
                finish = "stop_sequence"
                break
        return SimGeneration(
            text=text,
            tokens=tuple(tokens),
            top_tokens=tuple(tops),
            finish_reason=finish,
            seed=params.seed,
            input_length=self.input_length(inputs),
        )

    def _texts(self, rng: random.Random, *, steps_before: int, answer: int) -> Iterator[str]:
        """Token texts of the continuation: steps separated by a blank line, until a final answer."""
        s = self.settings
        step = steps_before
        while True:
            length = s.step_tokens.sample(rng)
            if rng.random() < s.hesitation_p:
                yield rng.choice(s.hesitation_words)
                emitted = 1
                if length > 1:
                    yield ","
                    emitted = 2
            else:
                yield rng.choice(_STARTS)
                emitted = 1
            for _ in range(length - emitted):
                yield rng.choice(_WORDS)
            if step >= s.answer_after and rng.random() < s.answer_p:
                yield from _ANSWER
                yield from str(answer)
                yield "}."
                yield _EOS
                return
            yield _STEP_END
            step += 1

    def _logprob(self, rng: random.Random) -> float:
        s = self.settings
        if rng.random() < s.confident_p:
            return -rng.uniform(0.0, s.confident_width)
        return -rng.expovariate(s.uncertain_rate)

    def _alternatives(self, sampled: SimToken, n: int, rng: random.Random) -> tuple[SimToken, ...]:
        """The sampled token and n-1 others sharing the probability mass it leaves, most probable first."""
        others = [t for t in rng.sample(_WORDS, min(n, len(_WORDS))) if t != sampled.text][: n - 1]
        rest = max(1e-9, 1.0 - math.exp(sampled.logprob))
        alts = [SimToken(self._ids[t], t, math.log(rest * 0.5 ** (k + 1))) for k, t in enumerate(others)]
        return tuple(sorted([sampled, *alts], key=lambda t: t.logprob, reverse=True))

    def _judge(self, inputs: str, params: SimParams, rng: random.Random) -> SimGeneration:
        """A one-token request with top-n is a judge: it answers a digit score 0-9."""
        logits = [rng.gauss(0.0, 1.0) for _ in _DIGITS]
        logits[rng.randint(0, 9)] += 4.0
        norm = math.log(sum(math.exp(x) for x in logits))
        digits = sorted(
            (SimToken(self._ids[d], d, x - norm) for d, x in zip(_DIGITS, logits, strict=True)),
            key=lambda t: t.logprob,
            reverse=True,
        )
        return SimGeneration(
            text=digits[0].text,
            tokens=(digits[0],),
            top_tokens=(tuple(digits[: params.top_n_tokens]),),
            finish_reason="length",
            seed=params.seed,
            input_length=self.input_length(inputs),
        )
