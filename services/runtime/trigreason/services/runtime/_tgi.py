"""TGI's wire format, once: the request body the project's TGI servers (``tgi-cpu``, ``backend-sim``)
accept, the checks every one of them makes, and the ``GenerateResponse`` / ``StreamResponse`` they answer.

Field names follow text-generation-inference's OpenAPI document (``docs/openapi.json``). Extensions, all
additive: ``details.input_length`` (TGI has it in stream details only), ``details.cached_tokens``
(prompt tokens whose K/V were reused) and ``parameters.forced_tokens`` (token ids the server emits first
instead of choosing them, each decoded and scored as a chosen one: a recorded generation replayed
exactly; ``tgi-cpu`` serves it, ``backend-sim`` refuses it). Differences, on purpose: ``temperature: 0``
means greedy and ``top_p: 1.0`` is accepted (TGI rejects both); ``generated_text`` ends before the stop
sequence that ended it (TGI keeps it). Messages of rejected requests use TGI's wording (``Input
validation error: ...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from trigreason.proto import TrigReasonError

__all__ = [
    "TgiBadRequest",
    "TgiChecked",
    "TgiDetails",
    "TgiParameters",
    "TgiPrefillToken",
    "TgiRequest",
    "TgiResponse",
    "TgiStreamDetails",
    "TgiStreamResponse",
    "TgiToken",
    "check_tgi_request",
    "decode_tgi_request",
    "encode_tgi",
    "tgi_sse_event",
]


class TgiParameters(msgspec.Struct, kw_only=True):
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
    # Accepted so TGI clients that always send them work; each server says which values it serves.
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    typical_p: float | None = None
    watermark: bool = False
    best_of: int | None = None
    grammar: Any = None
    adapter_id: str | None = None
    # Extension: a forced continuation (module docstring).
    forced_tokens: list[int] = msgspec.field(default_factory=list)


class TgiRequest(msgspec.Struct, kw_only=True):
    inputs: str
    parameters: TgiParameters = msgspec.field(default_factory=TgiParameters)
    stream: bool = False  # only read by the compat route ``POST /``


class TgiToken(msgspec.Struct, kw_only=True):
    id: int
    text: str
    logprob: float
    special: bool = False


class TgiPrefillToken(msgspec.Struct, kw_only=True):
    id: int
    text: str
    logprob: float | None = None  # none for the first prompt token


# Servers write every field; readers (the worker's TGI client) accept what other TGI servers leave out.
# UNSET fields are left out of the JSON, as TGI leaves them out.


class TgiDetails(msgspec.Struct, kw_only=True):
    finish_reason: str
    generated_tokens: int = 0
    seed: int | None = None
    prefill: list[TgiPrefillToken] = msgspec.field(default_factory=list)
    tokens: list[TgiToken] = msgspec.field(default_factory=list)
    top_tokens: list[list[TgiToken]] | UnsetType | None = UNSET  # only when ``top_n_tokens`` asks
    # Extensions (TGI reports the prompt length in a header only).
    input_length: int | UnsetType | None = UNSET
    cached_tokens: int | UnsetType | None = UNSET


class TgiResponse(msgspec.Struct, kw_only=True):
    """``GenerateResponse``; ``details`` is left out unless asked for, as TGI does."""

    generated_text: str
    details: TgiDetails | UnsetType | None = UNSET


class TgiStreamDetails(msgspec.Struct, kw_only=True):
    finish_reason: str
    generated_tokens: int = 0
    seed: int | None = None
    input_length: int | UnsetType | None = UNSET
    cached_tokens: int | UnsetType | None = UNSET


class TgiStreamResponse(msgspec.Struct, kw_only=True):
    """One ``StreamResponse``: the last carries ``generated_text`` (and ``details`` when asked); both are
    ``null`` on the others, as TGI sends them."""

    index: int
    token: TgiToken
    top_tokens: list[TgiToken] | UnsetType = UNSET  # only when ``top_n_tokens`` asks
    generated_text: str | None = None
    details: TgiStreamDetails | None = None


class TgiBadRequest(TrigReasonError):
    """A request a TGI server refuses: 400 when the body is not JSON at all, 422 (TGI's ``validation``)
    when it has the wrong shape or values."""

    code = "validation"

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message, code="bad_json" if status == 400 else None)
        self.status = status


@dataclass(frozen=True, kw_only=True, slots=True)
class TgiChecked:
    """What the common checks settle: the defaults filled in."""

    max_new_tokens: int
    top_n_tokens: int
    stream: bool


_request_decoder = msgspec.json.Decoder(TgiRequest)
_encoder = msgspec.json.Encoder()


def decode_tgi_request(body: bytes) -> TgiRequest:
    try:
        return _request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise TgiBadRequest(f"Input validation error: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise TgiBadRequest(f"Failed to parse the request body as JSON: {exc}", status=400) from exc


def check_tgi_request(
    req: TgiRequest,
    *,
    default_max_new_tokens: int,
    max_stop_sequences: int,
    max_top_n_tokens: int,
    stream: bool | None,
) -> TgiChecked:
    """The checks every server makes (TGI's wording); ``stream`` None means the body's own flag."""
    p = req.parameters
    streaming = req.stream if stream is None else stream
    max_new = default_max_new_tokens if p.max_new_tokens is None else p.max_new_tokens
    top_n = p.top_n_tokens or 0
    problem = None
    if not req.inputs:
        problem = "`inputs` cannot be empty"
    elif max_new <= 0:
        problem = "`max_new_tokens` must be strictly positive"
    elif len(p.stop) > max_stop_sequences:
        problem = f"`stop` supports up to {max_stop_sequences} stop sequences. Given: {len(p.stop)}"
    elif not 0 <= top_n <= max_top_n_tokens:
        problem = f"`top_n_tokens` must be >= 0 and <= {max_top_n_tokens}. Given: {top_n}"
    elif p.temperature is not None and p.temperature < 0:
        problem = "`temperature` must be strictly positive (0 means greedy here)"
    elif p.top_p is not None and not 0.0 < p.top_p <= 1.0:
        problem = "`top_p` must be > 0.0 and <= 1.0"
    elif p.top_k is not None and p.top_k <= 0:
        problem = "`top_k` must be strictly positive"
    elif p.seed is not None and p.seed < 0:
        problem = "`seed` must be >= 0"
    elif p.best_of not in (None, 1):
        problem = "`best_of` != 1 is not supported by this server"
    elif p.decoder_input_details and streaming:
        problem = "`decoder_input_details` == true is not supported when streaming tokens"
    elif any(t < 0 for t in p.forced_tokens):
        problem = "`forced_tokens` must be token ids (>= 0)"
    elif len(p.forced_tokens) > max_new:
        problem = (
            f"`forced_tokens` ({len(p.forced_tokens)} tokens) must be at most `max_new_tokens` ({max_new})"
        )
    if problem:
        raise TgiBadRequest(f"Input validation error: {problem}")
    return TgiChecked(max_new_tokens=max_new, top_n_tokens=top_n, stream=streaming)


def encode_tgi(message: TgiResponse | TgiStreamResponse | list[TgiResponse]) -> bytes:
    return _encoder.encode(message)


def tgi_sse_event(message: TgiStreamResponse | dict[str, str]) -> bytes:
    """One server-sent event of ``/generate_stream`` (a stream response, or an error object)."""
    return b"data: " + _encoder.encode(message) + b"\n\n"
