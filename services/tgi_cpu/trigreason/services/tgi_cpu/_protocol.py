"""TGI's wire format: request bodies in, ``GenerateResponse`` / ``StreamResponse`` out.

Field names follow text-generation-inference's OpenAPI document (``docs/openapi.json``). Extensions, all
additive: ``details.input_length`` (TGI has it in stream details only) and ``details.cached_tokens``
(prompt tokens whose K/V were reused). Differences, on purpose: ``temperature: 0`` means greedy and
``top_p: 1.0`` is accepted (TGI rejects both); ``generated_text`` ends before the stop sequence that ended
it (TGI keeps it); logprobs are the model's own (temperature 1, unfiltered), as llama.cpp and vLLM report
them, where TGI reports them after temperature and top-p when sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ._engine import Generation, SamplingParams, StreamToken, TokenInfo
from ._errors import InputValidationError
from ._settings import TgiCpuSettings

__all__ = [
    "ParsedRequest",
    "generate_response",
    "parse_request",
    "stream_message",
]


class _Parameters(msgspec.Struct, kw_only=True):
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    do_sample: bool = False
    seed: int | None = None
    stop: list[str] = msgspec.field(default_factory=list)
    details: bool = False
    decoder_input_details: bool = False
    top_n_tokens: int | None = None
    return_full_text: bool | None = None
    truncate: int | None = None
    # Accepted so TGI clients that always send them work; only their neutral values are served.
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    typical_p: float | None = None
    watermark: bool = False
    best_of: int | None = None
    grammar: Any = None
    adapter_id: str | None = None


class _Request(msgspec.Struct, kw_only=True):
    inputs: str
    parameters: _Parameters = msgspec.field(default_factory=_Parameters)
    stream: bool = False  # only read by the compat route ``POST /``


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedRequest:
    inputs: str
    params: SamplingParams
    details: bool
    return_full_text: bool
    truncate: int | None
    stream: bool


class BadJson(InputValidationError):
    """The body is not JSON at all (400); a body of the wrong shape is a validation error (422)."""

    code = "bad_json"


def parse_request(body: bytes, settings: TgiCpuSettings, *, stream: bool | None) -> ParsedRequest:
    """Decode and validate one request body; ``stream`` None means the body's own ``stream`` flag."""
    try:
        req = msgspec.json.decode(body, type=_Request)
    except msgspec.ValidationError as exc:
        raise InputValidationError(f"Input validation error: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadJson(f"Failed to parse the request body as JSON: {exc}") from exc
    p = req.parameters
    streaming = req.stream if stream is None else stream

    def fail(message: str) -> InputValidationError:
        return InputValidationError(f"Input validation error: {message}")

    if not req.inputs:
        raise fail("`inputs` cannot be empty")
    if p.best_of not in (None, 1):
        raise fail("`best_of` != 1 is not supported by this server")
    if p.temperature is not None and p.temperature < 0:
        raise fail("`temperature` must be strictly positive (0 means greedy here)")
    if p.top_p is not None and not 0.0 < p.top_p <= 1.0:
        raise fail("`top_p` must be > 0.0 and <= 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise fail("`top_k` must be strictly positive")
    if p.seed is not None and p.seed < 0:
        raise fail("`seed` must be >= 0")
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
    max_new = settings.default_max_new_tokens if p.max_new_tokens is None else p.max_new_tokens
    if max_new <= 0:
        raise fail("`max_new_tokens` must be strictly positive")
    if len(p.stop) > settings.max_stop_sequences:
        raise fail(
            f"`stop` supports up to {settings.max_stop_sequences} stop sequences. Given: {len(p.stop)}"
        )
    top_n = p.top_n_tokens or 0
    if not 0 <= top_n <= settings.max_top_n_tokens:
        raise fail(f"`top_n_tokens` must be >= 0 and <= {settings.max_top_n_tokens}. Given: {top_n}")
    if p.decoder_input_details and streaming:
        raise fail("`decoder_input_details` == true is not supported when streaming tokens")
    if p.truncate is not None and not 0 < p.truncate < settings.ctx:
        raise fail(f"`truncate` must be strictly positive and less than {settings.ctx}. Given: {p.truncate}")
    params = SamplingParams(
        max_new_tokens=max_new,
        do_sample=p.do_sample,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        seed=p.seed,
        stop=tuple(p.stop),
        top_n_tokens=top_n,
        decoder_input_details=p.decoder_input_details,
    )
    return ParsedRequest(
        inputs=req.inputs,
        params=params,
        details=p.details,
        return_full_text=bool(p.return_full_text),
        truncate=p.truncate,
        stream=streaming,
    )


def _token(t: TokenInfo) -> dict[str, Any]:
    return {"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.special}


def _details(req: ParsedRequest, gen: Generation) -> dict[str, Any]:
    details: dict[str, Any] = {
        "finish_reason": gen.finish_reason,
        "generated_tokens": len(gen.tokens),
        "seed": gen.seed,
        "prefill": [{"id": t.id, "text": t.text, "logprob": t.logprob} for t in gen.prefill],
        "tokens": [_token(t) for t in gen.tokens],
        "input_length": gen.input_length,
        "cached_tokens": gen.cached_tokens,
    }
    if req.params.top_n_tokens:
        details["top_tokens"] = [[_token(t) for t in top] for top in gen.top_tokens]
    return details


def _text(req: ParsedRequest, gen: Generation) -> str:
    return req.inputs + gen.text if req.return_full_text else gen.text


def generate_response(req: ParsedRequest, gen: Generation) -> dict[str, Any]:
    """TGI's ``GenerateResponse``; ``details`` is left out unless asked for, as TGI does."""
    out: dict[str, Any] = {"generated_text": _text(req, gen)}
    if req.details:
        out["details"] = _details(req, gen)
    return out


def stream_message(req: ParsedRequest, tok: StreamToken, gen: Generation | None) -> dict[str, Any]:
    """One ``StreamResponse``; the last one (``gen`` given) carries ``generated_text`` and details."""
    out: dict[str, Any] = {"index": tok.index + 1, "token": _token(tok.token)}
    if req.params.top_n_tokens:
        out["top_tokens"] = [_token(t) for t in tok.top_tokens]
    out["generated_text"] = None if gen is None else _text(req, gen)
    out["details"] = None
    if gen is not None and req.details:
        out["details"] = {
            "finish_reason": gen.finish_reason,
            "generated_tokens": len(gen.tokens),
            "seed": gen.seed,
            "input_length": gen.input_length,
            "cached_tokens": gen.cached_tokens,
        }
    return out
