"""Prompt rendering per model family. Backends receive raw text; both roles continue the same steps.

A session answers the last user turn of its conversation (the question); the whole conversation (system
messages, earlier user and assistant turns) is rendered through the family's chat template, the same way
for the SRM and the LRM, so both read the same conversation. Earlier assistant turns are context only.
"""

from __future__ import annotations

from collections.abc import Sequence

from trigreason.proto import ChatTurn, PromptFamily

__all__ = ["STEP_DELIMITER", "render_generation_prompt", "render_judge_prompt"]

STEP_DELIMITER = "\n\n"

_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
_QWEN_SYSTEM = "You are a helpful assistant."
_R1_BOS = "<｜begin▁of▁sentence｜>"
_R1_EOS = "<｜end▁of▁sentence｜>"
_RAW_LABEL = {"user": "User", "assistant": "Assistant"}


def _turns(question: str, messages: Sequence[ChatTurn], suffix: str) -> list[ChatTurn]:
    """The conversation with ``suffix`` added to its last user turn (the question); a lone question is one
    user turn."""
    turns = list(messages) or [ChatTurn(role="user", content=question)]
    last = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
    if last is None:  # no user turn (the gateway refuses this): the question follows the conversation
        turns.append(ChatTurn(role="user", content=question))
        last = len(turns) - 1
    turns[last] = ChatTurn(role="user", content=turns[last].content + suffix)
    return turns


def _chat_head(family: PromptFamily, turns: Sequence[ChatTurn], *, thinking: bool) -> str:
    """The template up to where the assistant answers, after the conversation ``turns``."""
    if family == "chatml":
        # Qwen's template: the family's system prompt unless the conversation brings its own.
        own = any(t.role == "system" for t in turns)
        head = "" if own else f"<|im_start|>system\n{_QWEN_SYSTEM}<|im_end|>\n"
        for t in turns:
            head += f"<|im_start|>{t.role}\n{t.content}<|im_end|>\n"
        return head + "<|im_start|>assistant\n"
    if family == "deepseek-r1":
        # DeepSeek-R1's template: the system prompt(s) right after BOS, then the turns.
        head = _R1_BOS + STEP_DELIMITER.join(t.content for t in turns if t.role == "system")
        for t in turns:
            if t.role == "user":
                head += f"<｜User｜>{t.content}"
            elif t.role == "assistant":
                head += f"<｜Assistant｜>{t.content}{_R1_EOS}"
        head += "<｜Assistant｜>"
        return head + ("<think>\n" if thinking else "<think>\n\n</think>\n\n")
    # raw (base models): a lone question is the question alone; a conversation is labelled turns.
    if len(turns) == 1 and turns[0].role == "user":
        return f"{turns[0].content}\n\n"
    parts = [t.content if t.role == "system" else f"{_RAW_LABEL[t.role]}: {t.content}" for t in turns]
    return STEP_DELIMITER.join([*parts, "Assistant:"]) + STEP_DELIMITER


def render_generation_prompt(
    family: PromptFamily, question: str, steps: Sequence[str], messages: Sequence[ChatTurn] = ()
) -> str:
    """The prefix a backend continues to write the next step: template, conversation (or the question
    alone), committed steps. The instruction goes with the question, the conversation's last user turn."""
    head = _chat_head(family, _turns(question, messages, f"\n{_INSTRUCTION}"), thinking=True)
    body = "".join(step + STEP_DELIMITER for step in steps)
    return head + body


def render_judge_prompt(
    family: PromptFamily, question: str, steps: Sequence[str], messages: Sequence[ChatTurn] = ()
) -> tuple[str, str]:
    """SpecReason's judge prompt split around the candidate step: ``head + candidate + tail``. The judge
    reads the conversation's system messages as its own and its other turns as the problem's context."""
    previous = STEP_DELIMITER.join(steps) if steps else "(none yet)"
    system = [t for t in messages if t.role == "system"]
    others = [t for t in messages if t.role != "system"]
    if others and others[-1].role == "user" and others[-1].content == question:
        others.pop()  # the question itself is the problem below
    earlier = [f"{_RAW_LABEL[t.role]}: {t.content}" for t in others]
    context = f"Conversation:\n{STEP_DELIMITER.join(earlier)}\n\n" if earlier else ""
    user_head = (
        "You are verifying a step of a solution to a math problem.\n\n"
        f"{context}Problem:\n{question}\n\nPrevious steps:\n{previous}\n\nNew step:\n"
    )
    user_tail = (
        "\n\nRate how correct and useful the new step is on a scale from 0 (wrong or useless) to 9 "
        "(certainly correct and useful). Answer with a single digit."
    )
    turns = [*system, ChatTurn(role="user", content=user_head + "\x00" + user_tail)]
    full = _chat_head(family, turns, thinking=False) + "Score: "
    # The marker is the last NUL: the question or a step may hold NULs of their own, the fixed tail never.
    head, _, tail = full.rpartition("\x00")
    return head, tail
