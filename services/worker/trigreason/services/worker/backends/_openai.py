"""Adapter for the OpenAI-compatible ``POST /v1/completions`` with ``logprobs`` (vLLM, SGLang,
llama.cpp's servers): raw-text prompts, so both protocols continue the same rendered prefix."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from trigreason.proto import BackendError, BackendTimings, FinishReason, GeneratedStep, TokenLogprob

from ._http import BackendSettings, HttpClient, trace_headers
from ._interface import Generation, GenerationRequest, JudgeResult, ScoreResult
from ._tgi import continuation_tokens, cut_at_stop

__all__ = ["OpenAIBackend"]


class _Logprobs(msgspec.Struct):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] = []


class _Choice(msgspec.Struct):
    text: str
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None
    # Why a "stop" happened: vLLM's ``stop_reason`` and SGLang's ``matched_stop`` are the stop string, or
    # the stop token id (EOS), or null for EOS; llama.cpp sends neither.
    stop_reason: str | int | msgspec.UnsetType | None = msgspec.UNSET
    matched_stop: str | int | msgspec.UnsetType | None = msgspec.UNSET
    token_ids: list[int] | None = None  # vLLM with ``return_token_ids``


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None


class _Model(msgspec.Struct):
    id: str


class _Models(msgspec.Struct):
    data: list[_Model]


class OpenAIBackend:
    """One OpenAI-compatible completions server. Safe to share between concurrent tasks.

    Servers that do not return token ids (llama.cpp, SGLang, vLLM unless ``openai_token_ids``) give steps
    with empty ``token_ids``; texts and log-probabilities are always there.
    """

    def __init__(self, base_url: str, *, settings: BackendSettings | None = None, name: str | None = None):
        base = base_url.rstrip("/")
        base = base.removesuffix("/v1")  # accept both http://host:8000 and http://host:8000/v1
        self.name = name or f"openai:{base}"
        self.settings = settings or BackendSettings()
        self._http = HttpClient(base, self.settings, name=self.name)
        self._model = self.settings.model
        self._model_lock = asyncio.Lock()

    @property
    def base_url(self) -> str:
        return self._http.base_url

    async def model(self) -> str:
        """The ``model`` sent with each request: the configured one, else the server's first model."""
        if self._model is not None:
            return self._model
        async with self._model_lock:
            if self._model is None:
                models: _Models = (await self._http.request("GET", "/v1/models")).json(_Models)
                if not models.data:
                    raise BackendError(
                        f"{self.name}: GET /v1/models lists no model",
                        code="backend_bad_response",
                        retryable=False,
                    )
                self._model = models.data[0].id
            return self._model

    async def generate(self, request: GenerationRequest) -> Generation:
        body: dict[str, Any] = {
            "model": await self.model(),
            "prompt": request.prompt,
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "logprobs": 1,  # the sampled token's logprob comes with every entry; 1 is the portable minimum
            "stream": False,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if self.settings.openai_token_ids:
            body["return_token_ids"] = True
        reply = await self._http.request(
            "POST", "/v1/completions", json=body, headers=trace_headers(request.headers)
        )
        completion: _Completion = reply.json(_Completion)
        choice = self._choice(completion)
        lp = choice.logprobs
        if lp is None or len(lp.tokens) != len(lp.token_logprobs):
            raise BackendError(
                f"{self.name}: the response has no per-token logprobs",
                code="backend_bad_response",
                retryable=False,
            )
        logprobs = tuple(x for x in lp.token_logprobs if x is not None)
        if len(logprobs) != len(lp.token_logprobs):
            raise BackendError(
                f"{self.name}: a sampled token has a null logprob",
                code="backend_bad_response",
                retryable=False,
            )
        finish, text = self._finish(choice, request.stop)
        ids = tuple(choice.token_ids) if choice.token_ids and len(choice.token_ids) == len(logprobs) else ()
        step = GeneratedStep(
            text=text,
            token_ids=ids,
            token_texts=tuple(lp.tokens),
            token_logprobs=logprobs,
            finish_reason=finish,
        )
        return Generation(step=step, timings=self._timings(completion, reply.elapsed_s))

    async def judge(
        self,
        prompt: str,
        *,
        top_n: int,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,  # one server: nothing to choose
    ) -> JudgeResult:
        body = {
            "model": await self.model(),
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": top_n,
            "stream": False,
        }
        reply = await self._http.request("POST", "/v1/completions", json=body, headers=trace_headers(headers))
        completion: _Completion = reply.json(_Completion)
        choice = self._choice(completion)
        lp = choice.logprobs
        if lp is None or not lp.top_logprobs or not lp.top_logprobs[0]:
            raise BackendError(
                f"{self.name}: the response has no top_logprobs", code="backend_bad_response", retryable=False
            )
        # llama.cpp adds the sampled token to the top-n; sort and trim so every server gives the same shape.
        top = sorted(lp.top_logprobs[0].items(), key=lambda kv: kv[1], reverse=True)[:top_n]
        return JudgeResult(
            top_logprobs=tuple(TokenLogprob(text, logprob) for text, logprob in top),
            timings=self._timings(completion, reply.elapsed_s),
        )

    async def score(
        self,
        prompt: str,
        continuation: str,
        *,
        headers: dict[str, str] | None = None,
        affinity_key: str | None = None,  # one server: nothing to choose
    ) -> ScoreResult:
        """The prompt log-probabilities of ``prompt + continuation`` through ``echo`` with ``logprobs``
        (vLLM has it; llama.cpp's server and hosted OpenAI do not: a clear error)."""
        body = {
            "model": await self.model(),
            "prompt": prompt + continuation,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": 1,
            "echo": True,
            "stream": False,
        }
        reply = await self._http.request("POST", "/v1/completions", json=body, headers=trace_headers(headers))
        completion: _Completion = reply.json(_Completion)
        lp = self._choice(completion).logprobs
        # Echoed: the prompt's tokens, then the one generated. Without echo only the generated one comes.
        if lp is None or len(lp.tokens) < 2 or len(lp.tokens) != len(lp.token_logprobs):
            raise BackendError(
                f"{self.name}: the server returned no prompt log-probabilities: a scoring call (the "
                "likelihood policy) needs /v1/completions with echo and logprobs (vLLM), or a TGI server",
                code="backend_unsupported",
                retryable=False,
            )
        # The echoed prompt's tokens are the first ones: with the generated token after them (vLLM), or
        # without it (llama-cpp-python's server); what they spell says which, and a server whose echo
        # does not spell the prompt is refused rather than read at the wrong offset.
        full = prompt + continuation
        n = next((k for k in (len(lp.tokens) - 1, len(lp.tokens)) if "".join(lp.tokens[:k]) == full), None)
        if n is None:
            raise BackendError(
                f"{self.name}: the echoed tokens do not spell the prompt: cannot tell the continuation's "
                "log-probabilities (a scoring call needs vLLM's echo, or a TGI server)",
                code="backend_unsupported",
                retryable=False,
            )
        prompt_lps = list(zip(lp.tokens[:n], lp.token_logprobs[:n], strict=True))
        return ScoreResult(
            tokens=continuation_tokens(prompt_lps, len(continuation)),
            timings=self._timings(completion, reply.elapsed_s),
        )

    def _choice(self, completion: _Completion) -> _Choice:
        if not completion.choices:
            raise BackendError(f"{self.name}: no choices", code="backend_bad_response", retryable=False)
        return completion.choices[0]

    def _finish(self, choice: _Choice, stops: tuple[str, ...]) -> tuple[FinishReason, str]:
        """TGI's finish reason (``length``, ``eos_token``, ``stop_sequence``) and the text without the
        stop sequence. OpenAI says only ``stop``; the server's stop reason tells a stop string from EOS
        where it sends one, else the sampled tokens do: the stop string lies past the returned text."""
        text = choice.text
        if choice.finish_reason == "length":
            return "length", text
        if choice.finish_reason != "stop":
            raise BackendError(
                f"{self.name}: unexpected finish_reason {choice.finish_reason!r}",
                code="backend_bad_response",
                retryable=False,
            )
        reason = choice.stop_reason if choice.stop_reason is not msgspec.UNSET else choice.matched_stop
        if isinstance(reason, str):
            return "stop_sequence", cut_at_stop(text, stops)
        if reason is not msgspec.UNSET:
            return "eos_token", text  # null or a stop token id
        cut = cut_at_stop(text, stops)
        if cut != text:  # the server kept the stop string in the text
            return "stop_sequence", cut
        tail = "".join(choice.logprobs.tokens if choice.logprobs else ())[len(text) :]
        if any(s and s in tail for s in stops):
            return "stop_sequence", text
        return "eos_token", text

    @staticmethod
    def _timings(completion: _Completion, elapsed_s: float) -> BackendTimings:
        usage = completion.usage
        if usage is None:
            return BackendTimings(backend_s=elapsed_s)
        cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else None
        return BackendTimings(
            backend_s=elapsed_s, prompt_tokens=usage.prompt_tokens, cached_prompt_tokens=cached or 0
        )

    async def aclose(self) -> None:
        await self._http.aclose()
