"""The official ``openai`` Python SDK against the running gateway (real nats-server, the services in this
process on scripted backends): plain and streamed completions, usage that adds up, an answer that is never
empty once a step was committed, the models it lists and selects, and errors as the SDK's exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all
from tests.support import step
from trigreason.proto import BackendTimings, SessionFailed, StepCommitted
from trigreason.services.gateway import GatewaySettings, idempotent_session_id, make_app
from trigreason.services.runtime import Bus
from trigreason.services.worker.backends import Generation, GenerationRequest

pytestmark = pytest.mark.timeout(60)

TOKEN = "sdk-token"
POLICIES = ["trigreason", "specreason", "lrm-only", "srm-only", "random", "likelihood"]
FINAL = step("So \\boxed{7}.")
NO_PRIMING = {"trigreason": {"params": {"priming_steps": 0, "rho": 1.0}}}


class PromptBackend(ScriptedBackend):
    """A scripted backend that reports the prompt it read, as a server does: a token per 4 characters."""

    async def generate(self, request: GenerationRequest) -> Generation:
        out = await super().generate(request)
        return Generation(step=out.step, timings=BackendTimings(prompt_tokens=prompt_tokens(request.prompt)))


def prompt_tokens(prompt: str) -> int:
    return len(prompt) // 4 + 1


class Served:
    def __init__(self, client: openai.AsyncOpenAI, bus: Bus, srm: PromptBackend) -> None:
        self.client = client
        self.bus = bus
        self.srm = srm


async def _serve(cluster: Cluster, srm: PromptBackend, **settings: Any) -> AsyncIterator[Served]:
    bus = await Bus.connect(cluster.settings, name="gateway")
    runner = web.AppRunner(make_app(bus, GatewaySettings(api_tokens=(TOKEN,), **settings)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0)
    try:
        yield Served(client, bus, srm)
    finally:
        await client.close()
        await runner.cleanup()
        await bus.close()


@pytest.fixture
async def gateway(cluster: Cluster) -> AsyncIterator[Served]:
    srm = PromptBackend("srm", [step("We add 3 and 4.")], default=FINAL)
    await start_all(cluster, srm, PromptBackend("lrm", default=FINAL))
    async for served in _serve(cluster, srm, session_timeout_s=20.0):
        yield served


@pytest.fixture
async def idle(cluster: Cluster) -> AsyncIterator[Served]:
    """A gateway with no services behind it: the test publishes the session's events itself."""
    async for served in _serve(cluster, PromptBackend("srm"), session_timeout_s=5.0, sse_keepalive_s=0.3):
        yield served


async def _drain(stream: Any, into: list[Any]) -> None:
    async for chunk in stream:
        into.append(chunk)


def _question(text: str = "What is 3 + 4?") -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_a_plain_completion(gateway: Served) -> None:
    resp = await gateway.client.chat.completions.create(
        model="trigreason", messages=_question(), extra_body=NO_PRIMING
    )
    (choice,) = resp.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "So \\boxed{7}.", "the committed step that holds the answer"
    assert choice.finish_reason == "stop"
    extra = choice.message.model_extra or {}
    assert extra["reasoning_content"] == "We add 3 and 4.\n\nSo \\boxed{7}."
    ours = (resp.model_extra or {})["trigreason"]
    assert ours["answer"] == "7"
    assert resp.model == "trigreason"
    assert resp.id == f"chatcmpl-{ours['session_id']}"
    # usage: the prompt the first backend call read, and the committed steps' tokens
    usage = resp.usage
    assert usage is not None
    assert usage.prompt_tokens == prompt_tokens(gateway.srm.requests[0].prompt) > 1
    assert usage.completion_tokens == ours["stats"]["srm_tokens"] + ours["stats"]["lrm_tokens"] > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_a_streamed_completion_with_usage(gateway: Served) -> None:
    stream = await gateway.client.chat.completions.create(
        model="trigreason",
        messages=_question(),
        stream=True,
        stream_options={"include_usage": True},
        extra_body=NO_PRIMING,
    )
    chunks = [chunk async for chunk in stream]
    with_choices = [c for c in chunks if c.choices]
    content = "".join(c.choices[0].delta.content or "" for c in with_choices)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in with_choices
    )
    assert content == "So \\boxed{7}."
    assert reasoning == "We add 3 and 4.\n\nSo \\boxed{7}.\n\n"
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "stop"
    assert {c.choices[0].finish_reason for c in with_choices[:-1]} == {None}
    # OpenAI's way: a last chunk with no choices carries the usage, the others have none.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == prompt_tokens(gateway.srm.requests[0].prompt)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert last.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert (with_choices[-1].model_extra or {})["trigreason"]["answer"] == "7"


async def test_no_usage_chunk_unless_asked(gateway: Served) -> None:
    stream = await gateway.client.chat.completions.create(
        model="trigreason", messages=_question(), stream=True, extra_body=NO_PRIMING
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_an_answer_without_a_box_is_the_last_step(cluster: Cluster) -> None:
    """The tiny model writes "2 + 3 = 5" and stops: the content is that step, not an empty string."""
    srm = PromptBackend("srm", default=step("2 + 3 = 5", finish="eos_token"))
    await start_all(cluster, srm, PromptBackend("lrm", default=step("2 + 3 = 5", finish="eos_token")))
    async for g in _serve(cluster, srm, session_timeout_s=20.0):
        resp = await g.client.chat.completions.create(
            model="trigreason", messages=_question("What is 2 + 3?"), extra_body=NO_PRIMING
        )
        assert resp.choices[0].message.content == "2 + 3 = 5"
        assert resp.choices[0].finish_reason == "stop"
        assert (resp.model_extra or {})["trigreason"]["answer"] is None
        assert resp.usage is not None
        assert resp.usage.prompt_tokens > 1
        stream = await g.client.chat.completions.create(
            model="trigreason", messages=_question("What is 2 + 3?"), stream=True, extra_body=NO_PRIMING
        )
        content = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert content == "2 + 3 = 5"


async def test_a_step_cap_finishes_with_length(cluster: Cluster) -> None:
    srm = PromptBackend("srm", default=step("Still thinking."))
    await start_all(cluster, srm, PromptBackend("lrm", default=step("Still thinking.")))
    async for g in _serve(cluster, srm, session_timeout_s=20.0):
        resp = await g.client.chat.completions.create(
            model="trigreason",
            messages=_question(),
            extra_body={"trigreason": {"params": {"priming_steps": 0, "rho": 1.0, "max_steps": 2}}},
        )
        assert resp.choices[0].finish_reason == "length"
        assert resp.choices[0].message.content == "Still thinking."


async def test_models_lists_the_policies_and_selects_one(gateway: Served) -> None:
    models = await gateway.client.models.list()
    assert [m.id for m in models.data] == POLICIES
    resp = await gateway.client.chat.completions.create(model="lrm-only", messages=_question())
    assert resp.model == "lrm-only"
    stats = (resp.model_extra or {})["trigreason"]["stats"]
    assert (stats["srm_steps"], stats["lrm_steps"] > 0) == (0, True), "lrm-only: the LRM wrote every step"


async def test_likelihood_through_the_openai_api_counts_its_scoring_calls(gateway: Served) -> None:
    resp = await gateway.client.chat.completions.create(
        model="likelihood", messages=_question(), extra_body={"trigreason": {"params": {"priming_steps": 0}}}
    )
    assert resp.model == "likelihood"
    assert resp.choices[0].message.content == "So \\boxed{7}."
    stats = (resp.model_extra or {})["trigreason"]["stats"]
    # Each SRM step was read by the LRM once (the scripted LRM finds every step likely).
    assert stats["score_calls"] == stats["srm_steps"] == 2
    assert stats["lrm_steps"] == 0
    assert stats["lrm_calls"] == 2


async def test_the_profile_is_a_model_and_the_default(cluster: Cluster) -> None:
    srm = PromptBackend("srm", default=FINAL)
    await start_all(cluster, srm, PromptBackend("lrm", default=FINAL))
    defaults = {"policy": "srm-only"}
    async for g in _serve(cluster, srm, profile="tiny", default_params=defaults, session_timeout_s=20.0):
        models = await g.client.models.list()
        assert [m.id for m in models.data] == ["tiny", *POLICIES]
        resp = await g.client.chat.completions.create(model="tiny", messages=_question())
        assert resp.model == "tiny"
        stats = (resp.model_extra or {})["trigreason"]["stats"]
        assert (stats["lrm_steps"], stats["srm_steps"] > 0) == (0, True), "the profile's policy: srm-only"


async def test_an_unknown_model_is_not_found(idle: Served) -> None:
    for stream in (False, True):  # before any stream starts: an HTTP error
        with pytest.raises(openai.NotFoundError) as info:
            await idle.client.chat.completions.create(model="gpt-4o", messages=_question(), stream=stream)
        assert info.value.status_code == 404
        assert info.value.code == "model_not_found"
        assert "The model 'gpt-4o' does not exist" in info.value.message
        assert "trigreason, specreason, lrm-only, srm-only" in info.value.message


async def test_a_bad_parameter_is_unprocessable(idle: Served) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await idle.client.chat.completions.create(model="trigreason", messages=_question(), temperature=50)
    assert info.value.code == "invalid_params"
    assert "temperature" in info.value.message
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await idle.client.chat.completions.create(
            model="trigreason", messages=_question(), extra_body={"trigreason": {"params": {"rh0": 0.5}}}
        )
    assert "did you mean 'rho'?" in info.value.message
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await idle.client.chat.completions.create(model="trigreason", messages=_question(), n=2)
    assert "n = 1" in info.value.message


async def test_a_bad_token_is_an_authentication_error(idle: Served) -> None:
    other = idle.client.with_options(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        await other.chat.completions.create(model="trigreason", messages=_question())


CONVERSATION: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 3 + 3?"},
    {"role": "assistant", "content": "6"},
    {"role": "user", "content": [{"type": "text", "text": "And"}, {"type": "text", "text": "3 + 4?"}]},
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_system_prompt_and_a_conversation_are_answered(gateway: Served, stream: bool) -> None:
    """The models read the conversation through their chat template; earlier turns are no steps."""
    resp = await gateway.client.chat.completions.create(
        model="trigreason", messages=CONVERSATION, extra_body=NO_PRIMING, stream=stream
    )
    if stream:
        chunks = [c async for c in resp if c.choices]  # type: ignore[union-attr]
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        reasoning = "".join(
            (c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks
        )
        assert reasoning == "We add 3 and 4.\n\nSo \\boxed{7}.\n\n"
    else:
        (choice,) = resp.choices  # type: ignore[union-attr]
        content = choice.message.content or ""
        assert (choice.message.model_extra or {})["reasoning_content"] == "We add 3 and 4.\n\nSo \\boxed{7}."
    assert content == "So \\boxed{7}."
    prompt = gateway.srm.requests[0].prompt
    assert prompt.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 3 + 3?")
    assert "<|im_start|>assistant\n6<|im_end|>\n<|im_start|>user\nAnd\n3 + 4?\n" in prompt


async def test_stop_ends_the_answer_at_the_first_stop_sequence(gateway: Served) -> None:
    resp = await gateway.client.chat.completions.create(
        model="trigreason", messages=_question(), extra_body=NO_PRIMING, stop=["and 4"]
    )
    (choice,) = resp.choices
    assert choice.finish_reason == "stop"
    assert choice.message.content == "We add 3 "
    assert (resp.model_extra or {})["trigreason"]["end_reason"] == "stop"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "image_url",
        ),
        ({"messages": [{"role": "assistant", "content": "Hello"}]}, "no user turn"),
    ],
    ids=["tools", "response_format", "logprobs", "n", "image_url", "no-user"],
)
async def test_what_it_cannot_honour_is_unprocessable_and_named(
    idle: Served, extra: dict[str, Any], named: str
) -> None:
    kwargs: dict[str, Any] = {"model": "trigreason", "messages": _question(), **extra}
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await idle.client.chat.completions.create(**kwargs)
    assert named in info.value.message


async def test_a_failure_mid_stream_raises_the_sessions_error(idle: Served) -> None:
    """The session fails after a step: the stream sends an error object and ends; the SDK raises it."""
    sid = idempotent_session_id(TOKEN, "fails")
    await idle.bus.publish(
        StepCommitted(session_id=sid, index=0, role="srm", text="We add.", tokens=2), msg_id=f"{sid}.c0"
    )
    await idle.bus.publish(SessionFailed(session_id=sid, code="backend", message="down"), msg_id=f"{sid}.x")
    stream = await idle.client.chat.completions.create(
        model="trigreason", messages=_question(), stream=True, extra_headers={"Idempotency-Key": "fails"}
    )
    got: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        await _drain(stream, got)
    assert info.value.message == f"session {sid} failed: down"
    assert info.value.code == "backend"
    assert [(c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in got] == [
        None,
        "We add.\n\n",
    ]
    # Not streamed: an HTTP error with the JSON body.
    with pytest.raises(openai.InternalServerError) as http_error:
        await idle.client.chat.completions.create(
            model="trigreason", messages=_question(), extra_headers={"Idempotency-Key": "fails"}
        )
    assert http_error.value.status_code == 502
    assert http_error.value.code == "session_failed"


def test_the_profile_files_name_is_its_model_id(tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    path.write_text('{"params": {"policy": "srm-only"}}')
    settings = GatewaySettings.from_env({"TRIGREASON_PROFILE": str(path)})
    assert (settings.profile, settings.default_params) == ("tiny", {"policy": "srm-only"})
    assert GatewaySettings.from_env({}).profile == ""


async def test_a_request_the_backend_refused_is_unprocessable_not_a_bad_gateway(idle: Served) -> None:
    sid = idempotent_session_id(TOKEN, "refused")
    message = "the inference server refused the request: `top_n_tokens` must be <= 20. Given: 40"
    await idle.bus.publish(SessionFailed(session_id=sid, code="request_refused", message=message), msg_id=sid)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await idle.client.chat.completions.create(
            model="specreason", messages=_question(), extra_headers={"Idempotency-Key": "refused"}
        )
    assert info.value.code == "request_refused"
    assert "top_n_tokens" in info.value.message
