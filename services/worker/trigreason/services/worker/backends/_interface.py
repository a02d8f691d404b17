"""The one async interface every inference backend implements (TGI, OpenAI-compatible, scripted)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from msgspec import Struct

from trigreason.proto import BackendTimings, GeneratedStep, TokenLogprob

__all__ = ["Backend", "Generation", "GenerationRequest", "JudgeResult", "ScoreResult"]


class GenerationRequest(Struct, kw_only=True, frozen=True):
    prompt: str
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ("\n\n",)
    temperature: float = 0.6
    top_p: float = 0.95
    seed: int | None = None
    # W3C trace context to forward to the server (``traceparent``), if any.
    headers: dict[str, str] = {}
    # The session the step belongs to: a pool of replicas sends a session's steps to one replica, whose
    # prefix cache holds the session so far. A single server ignores it.
    affinity_key: str | None = None


class Generation(Struct, kw_only=True, frozen=True):
    step: GeneratedStep
    timings: BackendTimings = BackendTimings()


class JudgeResult(Struct, kw_only=True, frozen=True):
    """The first generated token's top-n candidates."""

    top_logprobs: tuple[TokenLogprob, ...]
    timings: BackendTimings = BackendTimings()


class ScoreResult(Struct, kw_only=True, frozen=True):
    """A scoring call's answer: the continuation's tokens (as the server splits them) and the server's
    log-probability of each, read after the prompt in one prefill."""

    tokens: tuple[TokenLogprob, ...]
    timings: BackendTimings = BackendTimings()


@runtime_checkable
class Backend(Protocol):
    """Generate one step of raw-text continuation, score one token for a judge, or score a given
    continuation's tokens."""

    name: str

    async def generate(self, request: GenerationRequest) -> Generation: ...

    async def judge(
        self,
        prompt: str,
        *,
        top_n: int,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,
    ) -> JudgeResult: ...

    async def score(
        self,
        prompt: str,
        continuation: str,
        *,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,
    ) -> ScoreResult: ...

    async def aclose(self) -> None: ...
