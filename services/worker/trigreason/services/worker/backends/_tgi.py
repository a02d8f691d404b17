"""Adapter for Hugging Face TGI's protocol (``POST /generate`` with ``details: true``), which
``trigreason serve tgi-cpu`` and ``trigreason serve backend-sim`` also speak."""

from __future__ import annotations

from typing import Any

from trigreason.proto import BackendError, BackendTimings, FinishReason, GeneratedStep, TokenLogprob
from trigreason.services.runtime import TgiDetails, TgiResponse

from ._http import BackendSettings, HttpClient, trace_headers
from ._interface import Generation, GenerationRequest, JudgeResult, ScoreResult

__all__ = ["TgiBackend", "continuation_tokens", "cut_at_stop"]


_FINISH: dict[str, FinishReason] = {
    "length": "length",
    "eos_token": "eos_token",
    "stop_sequence": "stop_sequence",
}


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """``text`` up to the earliest stop sequence in it. TGI keeps the stop sequence that ended a step in
    ``generated_text``; the interface returns the step without it."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(hits)] if hits else text


def continuation_tokens(prompt: list[tuple[str, float | None]], chars: int) -> tuple[TokenLogprob, ...]:
    """The last prompt tokens whose texts cover the last ``chars`` characters, with their
    log-probabilities (a token without one, the very first, is left out)."""
    covered = 0
    start = len(prompt)
    while start > 0 and covered < chars:
        start -= 1
        covered += len(prompt[start][0])
    return tuple(TokenLogprob(text, lp) for text, lp in prompt[start:] if lp is not None)


class TgiBackend:
    """One TGI-protocol server (one replica). Safe to share between concurrent tasks."""

    def __init__(self, base_url: str, *, settings: BackendSettings | None = None, name: str | None = None):
        self.name = name or f"tgi:{base_url.rstrip('/')}"
        self.settings = settings or BackendSettings()
        self._http = HttpClient(base_url, self.settings, name=self.name)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    async def info(self) -> dict[str, Any]:
        """The server's ``GET /info`` (model id, limits)."""
        reply = await self._http.request("GET", "/info")
        info: dict[str, Any] = reply.json(dict[str, Any])
        return info

    async def generate(self, request: GenerationRequest) -> Generation:
        params: dict[str, Any] = {
            "max_new_tokens": request.max_new_tokens,
            "stop": list(request.stop),
            "details": True,
            "decoder_input_details": False,  # prompt logprobs would cost a full-vocabulary pass per token
        }
        # TGI rejects temperature 0 and top_p 1.0: greedy is do_sample false, and top_p 1 is "no top_p".
        if request.temperature > 0:
            params["do_sample"] = True
            params["temperature"] = request.temperature
            if request.top_p < 1.0:
                params["top_p"] = request.top_p
        else:
            params["do_sample"] = False
        if request.seed is not None:
            params["seed"] = request.seed
        reply = await self._http.request(
            "POST",
            "/generate",
            json={"inputs": request.prompt, "parameters": params},
            headers=trace_headers(request.headers),
        )
        body: TgiResponse = reply.json(TgiResponse)
        details = self._details(body)
        finish = _FINISH.get(details.finish_reason)
        if finish is None:
            raise BackendError(
                f"{self.name}: unknown finish_reason {details.finish_reason!r}",
                code="backend_bad_response",
                retryable=False,
            )
        text = body.generated_text
        if finish == "stop_sequence":
            text = cut_at_stop(text, request.stop)
        step = GeneratedStep(
            text=text,
            token_ids=tuple(t.id for t in details.tokens),
            token_texts=tuple(t.text for t in details.tokens),
            token_logprobs=tuple(t.logprob for t in details.tokens),
            finish_reason=finish,
        )
        return Generation(step=step, timings=self._timings(details, reply.headers, reply.elapsed_s))

    async def judge(
        self,
        prompt: str,
        *,
        top_n: int,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,  # one server: nothing to choose
    ) -> JudgeResult:
        params = {
            "max_new_tokens": 1,
            "do_sample": False,
            "details": True,
            "decoder_input_details": False,
            "top_n_tokens": top_n,
        }
        reply = await self._http.request(
            "POST", "/generate", json={"inputs": prompt, "parameters": params}, headers=trace_headers(headers)
        )
        details = self._details(reply.json(TgiResponse))
        if not details.top_tokens or not details.top_tokens[0]:
            raise BackendError(
                f"{self.name}: no top_tokens in the response (does the server support top_n_tokens?)",
                code="backend_bad_response",
                retryable=False,
            )
        top = sorted(details.top_tokens[0], key=lambda t: t.logprob, reverse=True)[:top_n]
        return JudgeResult(
            top_logprobs=tuple(TokenLogprob(t.text, t.logprob) for t in top),
            timings=self._timings(details, reply.headers, reply.elapsed_s),
        )

    async def score(
        self,
        prompt: str,
        continuation: str,
        *,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,  # one server: nothing to choose
    ) -> ScoreResult:
        """The prompt log-probabilities of ``prompt + continuation`` (``decoder_input_details``, one new
        token), of the tokens that cover ``continuation``: a token straddling the boundary counts."""
        params = {"max_new_tokens": 1, "do_sample": False, "details": True, "decoder_input_details": True}
        reply = await self._http.request(
            "POST",
            "/generate",
            json={"inputs": prompt + continuation, "parameters": params},
            headers=trace_headers(headers),
        )
        details = self._details(reply.json(TgiResponse))
        if not details.prefill:
            raise BackendError(
                f"{self.name}: no prefill in the response (does the server support decoder_input_details?)",
                code="backend_bad_response",
                retryable=False,
            )
        return ScoreResult(
            tokens=continuation_tokens([(t.text, t.logprob) for t in details.prefill], len(continuation)),
            timings=self._timings(details, reply.headers, reply.elapsed_s),
        )

    def _details(self, body: TgiResponse) -> TgiDetails:
        if not isinstance(body.details, TgiDetails):
            raise BackendError(
                f"{self.name}: the response has no details (is this a TGI server?)",
                code="backend_bad_response",
                retryable=False,
            )
        return body.details

    @staticmethod
    def _timings(details: TgiDetails, headers: Any, elapsed_s: float) -> BackendTimings:
        prompt_tokens = details.input_length if isinstance(details.input_length, int) else None
        if prompt_tokens is None:
            header = headers.get("x-prompt-tokens")  # TGI's own header
            prompt_tokens = int(header) if header and header.isdigit() else len(details.prefill)
        return BackendTimings(
            backend_s=elapsed_s, prompt_tokens=prompt_tokens, cached_prompt_tokens=details.cached_tokens or 0
        )

    async def aclose(self) -> None:
        await self._http.aclose()
