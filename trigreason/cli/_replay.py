"""``trigreason triggers replay``: explain offline why a policy's triggers fire on recorded SRM steps."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import IO, Annotated, Any

import msgspec

from trigreason.proto import TokenLogprob
from trigreason.services.trigger_evaluator.policies import Policy, ScoreRequest, SrmStep, StepVerdict

__all__ = ["RecordedStep", "ReplayError", "ReplayRow", "read_steps", "replay"]


class RecordedStep(msgspec.Struct, frozen=True):
    text: str
    token_logprobs: list[Annotated[float, msgspec.Meta(le=0.0)]]
    # The LRM's log-probability of each of the step's tokens (a scoring call's answer), for a policy
    # that needs one (likelihood); JSON null stands for -inf.
    lrm_token_logprobs: list[Annotated[float, msgspec.Meta(le=0.0)] | None] | None = None


class ReplayRow(msgspec.Struct, frozen=True, omit_defaults=True):
    index: int
    r_s: float
    hesitation: bool
    hesitation_run: int  # consecutive hesitating steps including this one
    # accept, or the policy's label for a replace: offload | intervene (trigreason), random (the baseline)
    verdict: str
    tokens: int
    # A scoring policy's statistic of the LRM log-probabilities (None: no scoring call was needed).
    score_stat: float | None = None


class ReplayError(ValueError):
    pass


def read_steps(lines: Iterable[str], *, source: str = "<input>") -> Iterator[RecordedStep]:
    decoder = msgspec.json.Decoder(RecordedStep)
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise ReplayError(
                f'{source}:{lineno}: {exc} (expected {{"text": str, "token_logprobs": [float <= 0, ...]}})'
            ) from exc


def replay(
    steps: Iterable[RecordedStep], *, policy: Policy[Any], params: Any, seed: int = 0
) -> Iterator[ReplayRow]:
    """Verdicts as the trigger-evaluator would give them under ``policy`` (a replayable one: it decides
    from the SRM step alone) with its typed ``params``, one SRM step after the other.

    Each step is the first attempt at its index; the hesitation run carries over as the policy's verdict
    leaves it (0 after a replace: the LRM writes next). ``seed`` is the session's (the random baseline
    draws from it).
    """
    if not policy.replayable or policy.on_step is None:
        raise ReplayError(f"policy {policy.name!r} cannot be replayed offline: it needs {policy.needs}")
    run = 0
    for index, step in enumerate(steps):
        srm = SrmStep(
            text=step.text,
            token_logprobs=tuple(step.token_logprobs),
            index=index,
            hesitation_run=run,
            seed=seed,
        )
        verdict = policy.on_step(srm, params)
        if isinstance(verdict, ScoreRequest) and policy.on_judged is not None:
            if step.lrm_token_logprobs is None:
                raise ReplayError(
                    f"step {index}: policy {policy.name!r} needs the LRM's log-probabilities of the step: "
                    'give them as "lrm_token_logprobs": [float <= 0 or null for -inf, ...]'
                )
            scored = [TokenLogprob("", -math.inf if lp is None else lp) for lp in step.lrm_token_logprobs]
            verdict = policy.on_judged(srm, scored, params)
        if not isinstance(verdict, StepVerdict):
            raise ReplayError(f"policy {policy.name!r} asked for an LRM call: it cannot be replayed offline")
        yield ReplayRow(
            index=index,
            r_s=verdict.r_s,
            hesitation=verdict.hesitates,
            hesitation_run=run + 1 if verdict.hesitates else 0,
            verdict=verdict.label or (verdict.reason if verdict.replace else None) or "accept",
            tokens=len(step.token_logprobs),
            score_stat=None
            if verdict.score_stat is None or not math.isfinite(verdict.score_stat)
            else verdict.score_stat,
        )
        run = verdict.hesitation_run


def write_jsonl(rows: Iterable[ReplayRow], out: IO[str]) -> None:
    for row in rows:
        out.write(msgspec.json.encode(row).decode() + "\n")
