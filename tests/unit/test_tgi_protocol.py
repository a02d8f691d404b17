"""TGI's wire format, written once (``trigreason.services.runtime``'s ``Tgi*``) and used by both TGI
servers and the worker's TGI client: what it accepts, refuses and writes."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import msgspec
import pytest

from trigreason.services.runtime import (
    TgiBadRequest,
    TgiDetails,
    TgiResponse,
    TgiStreamDetails,
    TgiStreamResponse,
    TgiToken,
    check_tgi_request,
    decode_tgi_request,
    encode_tgi,
    tgi_sse_event,
)

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"default_max_new_tokens": 20, "max_stop_sequences": 4, "max_top_n_tokens": 5}


def test_defaults_are_filled_in() -> None:
    req = decode_tgi_request(b'{"inputs": "hi", "parameters": {"top_n_tokens": 3}, "stream": true}')
    checked = check_tgi_request(req, **LIMITS, stream=None)
    assert (checked.max_new_tokens, checked.top_n_tokens, checked.stream) == (20, 3, True)
    assert check_tgi_request(req, **LIMITS, stream=False).stream is False


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        (b"not json", 400, "Failed to parse"),
        (b'{"parameters": {}}', 422, "Input validation error"),
        (b'{"inputs": "hi", "parameters": {"max_new_tokens": "x"}}', 422, "Input validation error"),
        (b'{"inputs": ""}', 422, "`inputs` cannot be empty"),
        (b'{"inputs": "hi", "parameters": {"max_new_tokens": 0}}', 422, "strictly positive"),
        (b'{"inputs": "hi", "parameters": {"stop": ["a", "b", "c", "d", "e"]}}', 422, "up to 4 stop"),
        (b'{"inputs": "hi", "parameters": {"top_n_tokens": 6}}', 422, "<= 5. Given: 6"),
        (b'{"inputs": "hi", "parameters": {"temperature": -1}}', 422, "`temperature`"),
        (b'{"inputs": "hi", "parameters": {"top_p": 0}}', 422, "`top_p`"),
        (b'{"inputs": "hi", "parameters": {"best_of": 2}}', 422, "`best_of`"),
        (b'{"inputs": "hi", "parameters": {"forced_tokens": [3, -1]}}', 422, "`forced_tokens`"),
        (
            b'{"inputs": "hi", "parameters": {"forced_tokens": [1, 2, 3], "max_new_tokens": 2}}',
            422,
            "at most",
        ),
    ],
)
def test_bad_requests_are_refused_in_tgi_words(body: bytes, status: int, match: str) -> None:
    with pytest.raises(TgiBadRequest, match=match) as caught:
        check_tgi_request(decode_tgi_request(body), **LIMITS, stream=None)
    assert caught.value.status == status
    assert caught.value.code == ("bad_json" if status == 400 else "validation")


def _token(i: int) -> TgiToken:
    return TgiToken(id=i, text=str(i), logprob=-0.5)


def test_responses_leave_out_what_was_not_asked_for() -> None:
    plain = json.loads(encode_tgi(TgiResponse(generated_text="x")))
    assert plain == {"generated_text": "x"}
    details = TgiDetails(finish_reason="length", generated_tokens=1, seed=None, tokens=[_token(1)])
    body = json.loads(encode_tgi([TgiResponse(generated_text="x", details=details)]))
    assert body[0]["details"] == {
        "finish_reason": "length",
        "generated_tokens": 1,
        "seed": None,
        "prefill": [],
        "tokens": [{"id": 1, "text": "1", "logprob": -0.5, "special": False}],
    }
    middle = tgi_sse_event(TgiStreamResponse(index=1, token=_token(1)))
    assert middle.startswith(b"data: ")
    assert middle.endswith(b"\n\n")
    assert json.loads(middle[6:]) == {
        "index": 1,
        "token": {"id": 1, "text": "1", "logprob": -0.5, "special": False},
        "generated_text": None,
        "details": None,
    }
    last = TgiStreamResponse(
        index=2,
        token=_token(2),
        top_tokens=[_token(2), _token(3)],
        generated_text="12",
        details=TgiStreamDetails(finish_reason="eos_token", generated_tokens=2, seed=7, cached_tokens=0),
    )
    out = json.loads(tgi_sse_event(last)[6:])
    assert [t["id"] for t in out["top_tokens"]] == [2, 3]
    assert out["details"] == {
        "finish_reason": "eos_token",
        "generated_tokens": 2,
        "seed": 7,
        "cached_tokens": 0,
    }


def test_the_client_reads_what_other_tgi_servers_leave_out() -> None:
    body = b'{"generated_text": "x", "details": {"finish_reason": "length", "tokens": []}}'
    parsed = msgspec.json.decode(body, type=TgiResponse)
    assert isinstance(parsed.details, TgiDetails)
    assert parsed.details.prefill == []
    assert not parsed.details.top_tokens


def test_the_schema_is_written_once() -> None:
    """No TGI server or client declares Structs of its own with TGI's request or response fields."""
    for service in ("tgi_cpu", "backend_sim", "worker"):
        for path in (ROOT / "services" / service).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any("Struct" in ast.unparse(b) for b in node.bases):
                    fields = {
                        s.target.id
                        for s in node.body
                        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                    }
                    assert not fields & {"inputs", "generated_text", "generated_tokens"}, (path, node.name)
