"""Conversations (system messages, earlier turns) and stop sequences: the prompts each model family sees,
the orchestrator's stop on the committed text, and the gateway's reading of OpenAI's request members."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from tests.support import drive, scripted, step
from trigreason.proto import ChatTurn, GenerateStep, SessionFinished, SessionParams
from trigreason.services.gateway import ChatBody, GatewaySettings, HttpError, chat_request
from trigreason.services.orchestrator import render_generation_prompt, render_judge_prompt

Q = "What is 3 + 4?"
TURNS = (
    ChatTurn(role="system", content="You answer like a pirate."),
    ChatTurn(role="user", content="What is 1 + 1?"),
    ChatTurn(role="assistant", content="Arr, 2."),
    ChatTurn(role="user", content=Q),
)
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def test_a_lone_question_renders_as_before() -> None:
    assert render_generation_prompt("raw", Q, ["a"]) == f"{Q}\n{INSTRUCTION}\n\na\n\n"
    chatml = render_generation_prompt("chatml", Q, [])
    assert chatml == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{Q}\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chatml_renders_the_conversation_with_its_own_system_prompt() -> None:
    prompt = render_generation_prompt("chatml", Q, ["We add."], TURNS)
    assert prompt == (
        "<|im_start|>system\nYou answer like a pirate.<|im_end|>\n"
        "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n"
        "<|im_start|>assistant\nArr, 2.<|im_end|>\n"
        f"<|im_start|>user\n{Q}\n{INSTRUCTION}<|im_end|>\n"
        "<|im_start|>assistant\nWe add.\n\n"
    )
    assert "You are a helpful assistant." not in prompt


def test_deepseek_r1_and_raw_render_the_conversation() -> None:
    r1 = render_generation_prompt("deepseek-r1", Q, [], TURNS)
    assert r1 == (
        "<｜begin▁of▁sentence｜>You answer like a pirate.<｜User｜>What is 1 + 1?"
        "<｜Assistant｜>Arr, 2.<｜end▁of▁sentence｜>"
        f"<｜User｜>{Q}\n{INSTRUCTION}<｜Assistant｜><think>\n"
    )
    raw = render_generation_prompt("raw", Q, [], TURNS)
    assert raw == (
        f"You answer like a pirate.\n\nUser: What is 1 + 1?\n\nAssistant: Arr, 2.\n\nUser: {Q}\n{INSTRUCTION}"
        "\n\nAssistant:\n\n"
    )


def test_the_instruction_goes_with_the_last_user_turn_even_before_a_trailing_turn() -> None:
    turns = (*TURNS, ChatTurn(role="assistant", content="Let me see."))
    prompt = render_generation_prompt("chatml", Q, [], turns)
    assert prompt.count(INSTRUCTION) == 1
    assert f"{Q}\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\nLet me see.<|im_end|>\n" in prompt


def test_the_judge_reads_the_system_prompt_and_the_earlier_turns() -> None:
    head, tail = render_judge_prompt("chatml", Q, ["We add."], TURNS)
    assert head.startswith("<|im_start|>system\nYou answer like a pirate.<|im_end|>\n")
    assert "Conversation:\nUser: What is 1 + 1?\n\nAssistant: Arr, 2.\n\nProblem:\nWhat is 3 + 4?" in head
    assert tail.endswith("<|im_start|>assistant\nScore: ")
    # Without a conversation the judge prompt is unchanged.
    lone_head, _ = render_judge_prompt("chatml", Q, [])
    assert "Conversation:" not in lone_head


def test_both_models_see_the_same_conversation() -> None:
    prompts: list[str] = []

    def record(script: Any) -> Any:
        def call(cmd: GenerateStep) -> Any:
            prompts.append(cmd.prompt)
            return script(cmd)

        return call

    trace = drive(
        Q,
        SessionParams(priming_steps=1),
        srm=record(scripted("So \\boxed{7}.")),
        lrm=record(scripted("We add.")),
        messages=TURNS,
    )
    assert [s.role for s in trace.state.steps] == ["lrm", "srm"]
    assert all("You answer like a pirate." in p and "Arr, 2." in p for p in prompts)
    assert len(prompts) == 2


def test_the_session_ends_at_the_first_stop_sequence_in_the_committed_text() -> None:
    trace = drive(
        Q,
        SessionParams(priming_steps=0),
        srm=scripted("We add 3 and 4.", "That gives 7. Question: next", then=step("more")),
        lrm=scripted(),
        stop=("Question:",),
    )
    end = trace.outputs[-1]
    assert isinstance(end, SessionFinished)
    assert end.reason == "stop"
    assert [s.text for s in trace.state.steps] == ["We add 3 and 4.", "That gives 7. "]


def test_a_stop_sequence_across_the_step_delimiter_drops_the_next_step() -> None:
    trace = drive(
        Q,
        SessionParams(priming_steps=0),
        srm=scripted("The end", "Next step.", then=step("more")),
        lrm=scripted(),
        stop=("end\n\nNext",),
    )
    end = trace.outputs[-1]
    assert isinstance(end, SessionFinished)
    assert end.reason == "stop"
    assert [s.text for s in trace.state.steps] == ["The end"]


# -- the gateway's reading of OpenAI's members -------------------------------------------------------

SETTINGS = GatewaySettings()


def _chat(**body: Any) -> Any:
    body.setdefault("messages", [{"role": "user", "content": Q}])
    return chat_request(msgspec.convert(body, ChatBody), SETTINGS)


def _refused(**body: Any) -> Any:
    """The 422's error object, as attributes."""
    with pytest.raises(HttpError) as caught:
        _chat(**body)
    assert caught.value.status == 422
    return _error(caught.value)


def _error(exc: HttpError) -> Any:
    assert exc.text is not None
    error = json.loads(exc.text)["error"]
    return SimpleNamespace(code=error["code"], message=error["message"])


def test_a_conversation_and_text_parts_are_read() -> None:
    chat = _chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "3 + 4?"}],
            },
            {"role": "assistant", "content": "Say again?", "name": "bot"},
            {"role": "user", "content": [{"type": "text", "text": Q}]},
        ],
        stop="Question:",
    )
    assert chat.question == Q
    assert [(t.role, t.content) for t in chat.conversation.messages] == [
        ("system", "Be brief."),
        ("user", "What is\n3 + 4?"),
        ("assistant", "Say again?"),
        ("user", Q),
    ]
    assert chat.conversation.stop == ("Question:",)
    assert _chat().conversation.messages == ()  # a lone question


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("tool_choice", "auto"),
        ("response_format", {"type": "json_object"}),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("n", 2),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("frequency_penalty", 0.5),
        ("presence_penalty", -1),
        ("logit_bias", {"50256": -100}),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("prediction", {"type": "content", "content": "x"}),
        ("reasoning_effort", "high"),
        ("web_search_options", {}),
        ("verbosity", "low"),
    ],
)
def test_each_member_it_cannot_honour_is_a_422_naming_it(member: str, value: Any) -> None:
    err = _refused(**{member: value})
    assert err.code == "unsupported_field"
    assert err.message.startswith(f"{member}:")


def test_members_at_their_no_op_value_and_the_no_effect_members_are_accepted() -> None:
    chat = _chat(
        tools=[],
        tool_choice="none",
        response_format={"type": "text"},
        logprobs=False,
        n=1,
        frequency_penalty=0,
        presence_penalty=0.0,
        modalities=["text"],
        user="u-1",
        metadata={"k": "v"},
        store=False,
        service_tier="auto",
        parallel_tool_calls=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
    )
    assert chat.question == Q


@pytest.mark.parametrize(
    ("messages", "code", "named"),
    [
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "unsupported_content",
            "'image_url'",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            "unsupported_content",
            "'input_audio'",
        ),
        ([{"role": "user", "content": [{"type": "file", "file": {}}]}], "unsupported_content", "'file'"),
        ([{"role": "tool", "content": "42", "tool_call_id": "c1"}], "unsupported_field", "tool_call_id"),
        ([{"role": "tool", "content": "42"}], "unsupported_messages", "'tool'"),
        ([{"role": "system", "content": "Be brief."}], "unsupported_messages", "no user turn"),
        (
            [{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}],
            "unsupported_field",
            "tool_calls",
        ),
        ([{"role": "user", "content": "  "}], "invalid_request", "blank"),
    ],
)
def test_what_the_models_cannot_read_is_a_422_naming_it(messages: Any, code: str, named: str) -> None:
    err = _refused(messages=messages)
    assert err.code == code
    assert named in err.message


def test_an_unknown_member_is_refused_by_name() -> None:
    with pytest.raises(msgspec.ValidationError, match="frobnicate"):
        msgspec.convert({"messages": [{"role": "user", "content": Q}], "frobnicate": 1}, ChatBody)


def test_too_many_stop_sequences_and_too_long_a_conversation() -> None:
    assert _refused(stop=["a", "b", "c", "d", "e"]).message.startswith("stop:")
    with pytest.raises(HttpError) as caught:
        _chat(messages=[{"role": "system", "content": "x" * 19_000}] * 4 + [{"role": "user", "content": Q}])
    assert (caught.value.status, _error(caught.value).code) == (422, "context_too_long")
