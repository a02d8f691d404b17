"""A scripted backend (a test double of ``trigreason.services.worker.backends.Backend``): replays given
steps in order. For tests of pure logic and of the cluster without a model."""

from __future__ import annotations

from collections.abc import Iterable

from trigreason.proto import BackendError, GeneratedStep, TokenLogprob
from trigreason.services.worker.backends import Generation, GenerationRequest, JudgeResult, ScoreResult

__all__ = ["ScriptedBackend"]


class ScriptedBackend:
    """Answers each ``generate`` with the next scripted step, each ``judge`` with the next score and each
    ``score`` with the next scripted log-probability.

    It records every request so tests can check what a policy asked for.
    """

    def __init__(
        self,
        name: str,
        steps: Iterable[GeneratedStep] = (),
        *,
        judge_scores: Iterable[int] = (),
        default: GeneratedStep | None = None,
        score_logprobs: Iterable[float] = (),
    ) -> None:
        self.name = name
        self._steps = list(steps)
        self._scores = list(judge_scores)
        self._default = default
        self.requests: list[GenerationRequest] = []
        self.judge_prompts: list[str] = []
        self.scored: list[tuple[str, str]] = []
        self._score_logprobs = list(score_logprobs)

    async def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        if self._steps:
            step = self._steps.pop(0)
        elif self._default is not None:
            step = self._default
        else:
            raise BackendError(f"{self.name}: script exhausted", code="script_exhausted")
        if step.tokens > request.max_new_tokens:  # honour the cap as a real server would
            n = request.max_new_tokens
            step = GeneratedStep(
                text=step.text,
                token_ids=step.token_ids[:n],
                token_texts=step.token_texts[:n],
                token_logprobs=step.token_logprobs[:n],
                finish_reason="length",
            )
        return Generation(step=step)

    async def judge(
        self,
        prompt: str,
        *,
        top_n: int,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,  # one server: nothing to choose
    ) -> JudgeResult:
        self.judge_prompts.append(prompt)
        score = self._scores.pop(0) if self._scores else 9
        return JudgeResult(top_logprobs=(TokenLogprob(str(score), -0.1), TokenLogprob("0", -3.0))[:top_n])

    async def score(
        self,
        prompt: str,
        continuation: str,
        *,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,
    ) -> ScoreResult:
        """Each word of the continuation is a token, all at the next scripted log-probability (-0.1)."""
        self.scored.append((prompt, continuation))
        lp = self._score_logprobs.pop(0) if self._score_logprobs else -0.1
        return ScoreResult(tokens=tuple(TokenLogprob(w, lp) for w in continuation.split(" ") if w))

    async def aclose(self) -> None:
        return None
