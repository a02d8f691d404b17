"""``trigreason triggers replay``: explain offline why TrigReason's triggers fire on recorded SRM steps."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Annotated

import msgspec

from trigreason.services.trigger_evaluator import (
    confident_share,
    decide_trigreason,
    hesitates,
    random_offload,
)

__all__ = ["RecordedStep", "ReplayError", "ReplayRow", "read_steps", "replay"]


class RecordedStep(msgspec.Struct, frozen=True):
    text: str
    token_logprobs: list[Annotated[float, msgspec.Meta(le=0.0)]]


class ReplayRow(msgspec.Struct, frozen=True):
    index: int
    r_s: float
    hesitation: bool
    hesitation_run: int  # consecutive hesitating steps including this one
    verdict: str  # accept | offload | intervene (trigreason); accept | random (the random baseline)
    tokens: int


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
    steps: Iterable[RecordedStep],
    *,
    tau: float,
    rho: float,
    k: int,
    m: int,
    hesitation: tuple[str, ...],
    policy: str = "trigreason",
    offload_p: float = 0.0,
    seed: int = 0,
) -> Iterator[ReplayRow]:
    """Verdicts as the trigger-evaluator would give them, one SRM step after the other.

    After any replace verdict the LRM writes the step, so the next SRM step's hesitation run starts at 0.
    Under ``random`` the verdict is the baseline's seeded draw (step ``index``, first attempt), with
    ``r_s`` and hesitation shown for comparison.
    """
    run = 0
    for index, step in enumerate(steps):
        if policy == "random":
            replaced = random_offload(seed=seed, step_index=index, attempt=0, offload_p=offload_p)
            hes = hesitates(step.text, hesitation)
            yield ReplayRow(
                index=index,
                r_s=confident_share(step.token_logprobs, tau),
                hesitation=hes,
                hesitation_run=0,
                verdict="random" if replaced else "accept",
                tokens=len(step.token_logprobs),
            )
            continue
        d = decide_trigreason(
            text=step.text,
            token_logprobs=step.token_logprobs,
            hesitation_run=run,
            tau=tau,
            rho=rho,
            k=k,
            m=m,
            hesitation=hesitation,
        )
        run = d.next_run
        yield ReplayRow(
            index=index,
            r_s=d.r_s,
            hesitation=d.hesitates,
            hesitation_run=d.run,
            verdict=d.verdict,
            tokens=len(step.token_logprobs),
        )


def write_jsonl(rows: Iterable[ReplayRow], out: IO[str]) -> None:
    for row in rows:
        out.write(msgspec.json.encode(row).decode() + "\n")
