"""Prompt rendering per model family. Backends receive raw text; both roles continue the same steps."""

from __future__ import annotations

from collections.abc import Sequence

from trigreason.proto import PromptFamily

__all__ = ["STEP_DELIMITER", "render_generation_prompt", "render_judge_prompt"]

STEP_DELIMITER = "\n\n"

_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
_QWEN_SYSTEM = "You are a helpful assistant."


def _chat_head(family: PromptFamily, user: str, *, thinking: bool) -> str:
    if family == "chatml":
        return (
            f"<|im_start|>system\n{_QWEN_SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        )
    if family == "deepseek-r1":
        head = f"<｜begin▁of▁sentence｜><｜User｜>{user}<｜Assistant｜>"
        return head + ("<think>\n" if thinking else "<think>\n\n</think>\n\n")
    return f"{user}\n\n"


def render_generation_prompt(family: PromptFamily, question: str, steps: Sequence[str]) -> str:
    """The prefix a backend continues to write the next step: template, question, committed steps."""
    head = _chat_head(family, f"{question}\n{_INSTRUCTION}", thinking=True)
    body = "".join(step + STEP_DELIMITER for step in steps)
    return head + body


def render_judge_prompt(family: PromptFamily, question: str, steps: Sequence[str]) -> tuple[str, str]:
    """SpecReason's judge prompt split around the candidate step: ``head + candidate + tail``."""
    previous = STEP_DELIMITER.join(steps) if steps else "(none yet)"
    user_head = (
        "You are verifying a step of a solution to a math problem.\n\n"
        f"Problem:\n{question}\n\nPrevious steps:\n{previous}\n\nNew step:\n"
    )
    user_tail = (
        "\n\nRate how correct and useful the new step is on a scale from 0 (wrong or useless) to 9 "
        "(certainly correct and useful). Answer with a single digit."
    )
    full = _chat_head(family, user_head + "\x00" + user_tail, thinking=False) + "Score: "
    head, tail = full.split("\x00")
    return head, tail
