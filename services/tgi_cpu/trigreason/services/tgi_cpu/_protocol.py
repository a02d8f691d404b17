"""TGI's wire format for the CPU server: the shared schema and checks (``trigreason.services.runtime``'s
``TgiRequest``, ``TgiResponse``, ...) turned into llama.cpp's sampling parameters, and the engine's results
into TGI responses.

Besides the shared checks, this server serves only the neutral values of the parameters it does not
implement (``repetition_penalty``, ``frequency_penalty``, ``typical_p``, ``watermark``, ``grammar``,
``adapter_id``). Logprobs are the model's own (temperature 1, unfiltered), as llama.cpp and vLLM report
them, where TGI reports them after temperature and top-p when sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

from msgspec import UNSET

from trigreason.services.runtime import (
    TgiBadRequest,
    TgiDetails,
    TgiPrefillToken,
    TgiResponse,
    TgiStreamDetails,
    TgiStreamResponse,
    TgiToken,
    check_tgi_request,
    decode_tgi_request,
)

from ._engine import Generation, SamplingParams, StreamToken, TokenInfo
from ._settings import TgiCpuSettings

__all__ = [
    "ParsedRequest",
    "generate_response",
    "parse_request",
    "stream_message",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedRequest:
    inputs: str
    params: SamplingParams
    details: bool
    return_full_text: bool
    truncate: int | None
    stream: bool


def parse_request(body: bytes, settings: TgiCpuSettings, *, stream: bool | None) -> ParsedRequest:
    """Decode and validate one request body (raises ``TgiBadRequest``); ``stream`` None means the body's
    own ``stream`` flag."""
    req = decode_tgi_request(body)
    checked = check_tgi_request(
        req,
        default_max_new_tokens=settings.default_max_new_tokens,
        max_stop_sequences=settings.max_stop_sequences,
        max_top_n_tokens=settings.max_top_n_tokens,
        stream=stream,
    )
    p = req.parameters

    def fail(message: str) -> TgiBadRequest:
        return TgiBadRequest(f"Input validation error: {message}")

    if p.repetition_penalty not in (None, 1.0):
        raise fail("`repetition_penalty` is not supported by this server")
    if p.frequency_penalty not in (None, 0.0):
        raise fail("`frequency_penalty` is not supported by this server")
    if p.typical_p not in (None, 1.0):
        raise fail("`typical_p` is not supported by this server")
    if p.watermark:
        raise fail("`watermark` is not supported by this server")
    if p.grammar is not None:
        raise fail("grammar is not supported")
    if p.adapter_id:
        raise fail("`adapter_id` is not supported by this server")
    if p.truncate is not None and not 0 < p.truncate < settings.ctx:
        raise fail(f"`truncate` must be strictly positive and less than {settings.ctx}. Given: {p.truncate}")
    params = SamplingParams(
        max_new_tokens=checked.max_new_tokens,
        do_sample=p.do_sample,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        seed=p.seed,
        stop=tuple(p.stop),
        top_n_tokens=checked.top_n_tokens,
        decoder_input_details=p.decoder_input_details,
        forced_tokens=tuple(p.forced_tokens),
    )
    return ParsedRequest(
        inputs=req.inputs,
        params=params,
        details=p.details,
        return_full_text=bool(p.return_full_text),
        truncate=p.truncate,
        stream=checked.stream,
    )


def _token(t: TokenInfo) -> TgiToken:
    return TgiToken(id=t.id, text=t.text, logprob=t.logprob, special=t.special)


def _details(req: ParsedRequest, gen: Generation) -> TgiDetails:
    return TgiDetails(
        finish_reason=gen.finish_reason,
        generated_tokens=len(gen.tokens),
        seed=gen.seed,
        prefill=[TgiPrefillToken(id=t.id, text=t.text, logprob=t.logprob) for t in gen.prefill],
        tokens=[_token(t) for t in gen.tokens],
        top_tokens=[[_token(t) for t in top] for top in gen.top_tokens] if req.params.top_n_tokens else UNSET,
        input_length=gen.input_length,
        cached_tokens=gen.cached_tokens,
    )


def _text(req: ParsedRequest, gen: Generation) -> str:
    return req.inputs + gen.text if req.return_full_text else gen.text


def generate_response(req: ParsedRequest, gen: Generation) -> TgiResponse:
    """TGI's ``GenerateResponse``; ``details`` is left out unless asked for, as TGI does."""
    return TgiResponse(generated_text=_text(req, gen), details=_details(req, gen) if req.details else UNSET)


def stream_message(req: ParsedRequest, tok: StreamToken, gen: Generation | None) -> TgiStreamResponse:
    """One ``StreamResponse``; the last one (``gen`` given) carries ``generated_text`` and details."""
    details = None
    if gen is not None and req.details:
        details = TgiStreamDetails(
            finish_reason=gen.finish_reason,
            generated_tokens=len(gen.tokens),
            seed=gen.seed,
            input_length=gen.input_length,
            cached_tokens=gen.cached_tokens,
        )
    return TgiStreamResponse(
        index=tok.index + 1,
        token=_token(tok.token),
        top_tokens=[_token(t) for t in tok.top_tokens] if req.params.top_n_tokens else UNSET,
        generated_text=None if gen is None else _text(req, gen),
        details=details,
    )
