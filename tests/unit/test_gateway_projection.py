"""The gateway's session view as a projection of the session's events: plain, synchronous, table-driven."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from trigreason.proto import (
    ChatTurn,
    GeneratedStep,
    JudgeScored,
    Message,
    MessageDeadLettered,
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionRequested,
    SessionStats,
    StepCommitted,
    StepGenerated,
    Verdict,
    command_subject,
    flat_params,
)
from trigreason.services.gateway import session_view
from trigreason.services.trigger_evaluator.policies import PolicyRegistry

SID = "s1"
# As the gateway submits them: the policy's own parameters complete in policy_params.
PARAMS = PolicyRegistry.builtin().session_params({"policy": "trigreason"})
REQUESTED = SessionRequested(session_id=SID, question="What is 3 + 4?", params=PARAMS, requested_at=100.0)
FINAL_STATS = SessionStats(srm_tokens=5, lrm_tokens=7, srm_token_ratio=5 / 12, srm_calls=3, wall_s=9.5)


def _committed(index: int, role: str = "srm", tokens: int = 1, text: str | None = None) -> StepCommitted:
    trigger = "priming" if role == "lrm" else None
    return msgspec.convert(
        {
            "session_id": SID,
            "index": index,
            "role": role,
            "text": text if text is not None else f"step {index}",
            "tokens": tokens,
            "trigger": trigger,
        },
        StepCommitted,
    )


def _generated(at: float, role: str = "srm") -> StepGenerated:
    return msgspec.convert(
        {
            "session_id": SID,
            "command_id": f"c{at}",
            "step_index": 0,
            "role": role,
            "step": msgspec.to_builtins(GeneratedStep(text="x", token_ids=(1,))),
            "at": at,
        },
        StepGenerated,
    )


def _verdict(at: float) -> Verdict:
    return Verdict(session_id=SID, step_index=0, decision="accept", candidate=_generated(at - 1), at=at)


FINISHED = SessionFinished(session_id=SID, answer="7", reason="final_answer", steps=2, stats=FINAL_STATS)
FAILED = SessionFailed(session_id=SID, code="deadline", message="too slow", stats=FINAL_STATS)
DEAD = MessageDeadLettered(session_id=SID, origin_subject=command_subject("srm"), reason="poison", at=104.0)


def _step(index: int, role: str = "srm", tokens: int = 1, text: str | None = None) -> dict[str, Any]:
    return {
        "index": index,
        "role": role,
        "text": text if text is not None else f"step {index}",
        "tokens": tokens,
        "trigger": "priming" if role == "lrm" else None,
    }


def _stats(**fields: Any) -> dict[str, Any]:
    stats: dict[str, Any] = msgspec.to_builtins(SessionStats(**fields))
    return stats


def _view(status: str, **fields: Any) -> dict[str, Any]:
    view = {
        "session_id": SID,
        "status": status,
        "question": "What is 3 + 4?",
        "conversation": [{"role": "user", "content": "What is 3 + 4?"}],
        "policy": "trigreason",
        "answer": None,
        "end_reason": None,
        "steps": [],
        "stats": _stats(),
        "params": flat_params(PARAMS),
    }
    view.update(fields)
    return view


CASES: list[tuple[str, list[Message | None], dict[str, Any] | None]] = [
    ("no events: unknown or expired", [], None),
    ("only undecodable events", [None, None], None),
    ("another session's event only", [msgspec.structs.replace(REQUESTED, session_id="other")], None),
    ("requested: queued", [REQUESTED], _view("queued")),
    (
        "a second request changes nothing",
        [REQUESTED, msgspec.structs.replace(REQUESTED, question="?")],
        _view("queued"),
    ),
    (
        "a worker's step: running, wall time up to it",
        [REQUESTED, _generated(103.5)],
        _view("running", stats=_stats(wall_s=3.5)),
    ),
    (
        "committed steps: tokens and steps per role, the ratio",
        [REQUESTED, _committed(0, "lrm", 3), _verdict(102.0), _committed(1, "srm", 1)],
        _view(
            "running",
            steps=[_step(0, "lrm", 3), _step(1, "srm", 1)],
            stats=_stats(
                srm_tokens=1, lrm_tokens=3, srm_steps=1, lrm_steps=1, srm_token_ratio=0.25, wall_s=2.0
            ),
        ),
    ),
    (
        "a step index already seen is dropped, steps come in index order",
        [REQUESTED, _committed(1, tokens=2), _committed(0), _committed(1, tokens=9, text="again")],
        _view(
            "running",
            steps=[_step(0), _step(1, tokens=2)],
            stats=_stats(srm_tokens=3, srm_steps=2, srm_token_ratio=1.0),
        ),
    ),
    (
        "events it does not need are ignored but say the session runs",
        [REQUESTED, None, _verdict(101.0), DEAD],
        _view("running", stats=_stats(wall_s=4.0)),
    ),
    (
        "finished: answer, reason and the terminal event's statistics",
        [REQUESTED, _committed(0), _committed(1), FINISHED],
        _view(
            "finished",
            answer="7",
            end_reason="final_answer",
            steps=[_step(0), _step(1)],
            stats=msgspec.to_builtins(FINAL_STATS),
        ),
    ),
    (
        "failed: the code is the end reason, no answer",
        [REQUESTED, _committed(0), FAILED],
        _view("failed", end_reason="deadline", steps=[_step(0)], stats=msgspec.to_builtins(FINAL_STATS)),
    ),
    (
        "after the first terminal event nothing counts",
        [REQUESTED, FINISHED, _committed(0), FAILED, msgspec.structs.replace(FINISHED, answer="8")],
        _view("finished", answer="7", end_reason="final_answer", stats=msgspec.to_builtins(FINAL_STATS)),
    ),
    (
        "the request expired: what the other events tell",
        [_committed(0, tokens=4), FINISHED],
        {
            "session_id": SID,
            "status": "finished",
            "answer": "7",
            "end_reason": "final_answer",
            "steps": [_step(0, tokens=4)],
            "stats": msgspec.to_builtins(FINAL_STATS),
        },
    ),
    (
        "a judge's score is known but not counted",
        [
            REQUESTED,
            JudgeScored(
                session_id=SID,
                command_id="j",
                step_index=0,
                top_logprobs=(),
                candidate=_generated(1.0),
                at=106.0,
            ),
        ],
        _view("running", stats=_stats(wall_s=6.0)),
    ),
]


def _json_view(events: list[Message | None]) -> Any:
    """The view as its JSON: the SessionView Struct the gateway encodes."""
    view = session_view(SID, events)
    return None if view is None else msgspec.json.decode(msgspec.json.encode(view))


@pytest.mark.parametrize(("events", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_session_view(events: list[Message | None], expected: dict[str, Any] | None) -> None:
    assert _json_view(events) == expected


def test_the_view_is_what_the_stats_struct_says() -> None:
    """Every statistic a running view gives is a SessionStats field, as the OpenAPI document says."""
    view = _json_view([REQUESTED, _committed(0, "lrm", 2)])
    assert view is not None
    assert set(view["stats"]) == {f.encode_name for f in msgspec.structs.fields(SessionStats)}
    msgspec.convert(view["stats"], SessionStats)
    # Flat, as in v1: the policy's own parameters beside the common ones.
    assert "policy_params" not in view["params"]
    assert (view["params"]["tau"], view["params"]["max_tokens"]) == (1.05, 8192)
    msgspec.convert(view["params"], SessionParams)


def test_the_view_shows_the_conversation_apart_from_the_steps() -> None:
    turns = (
        ChatTurn(role="system", content="Answer like a pirate."),
        ChatTurn(role="user", content="What is 1 + 1?"),
        ChatTurn(role="assistant", content="Arr, \\boxed{2}."),
        ChatTurn(role="user", content="What is 3 + 4?"),
    )
    request = SessionRequested(
        session_id=SID, question="What is 3 + 4?", params=PARAMS, requested_at=100.0, messages=turns
    )
    step = StepCommitted(session_id=SID, index=0, role="srm", text="3 + 4 = 7.", tokens=4)
    view = _json_view([request, step])
    assert view is not None
    assert view["conversation"] == [{"role": t.role, "content": t.content} for t in turns]
    assert view["question"] == "What is 3 + 4?"
    assert [s["text"] for s in view["steps"]] == ["3 + 4 = 7."]  # the earlier answer is no step
