"""The wire contract: round trips, typed decoding per subject, compatibility, schema drift."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from tests.support import step
from trigreason.proto import (
    SCHEMA_DIR,
    DecodeError,
    GenerateStep,
    JudgeScored,
    JudgeStep,
    Message,
    SessionFailed,
    SessionFinished,
    SessionParams,
    SessionRequested,
    SessionSnapshot,
    SessionStats,
    StepCommitted,
    StepFailed,
    StepGenerated,
    TokenLogprob,
    TriggerContext,
    TypedDecoder,
    Verdict,
    decode_message,
    encode,
    render_schemas,
    subject_for,
    subject_template,
)
from trigreason.services.orchestrator import render_diagram

ROOT = Path(__file__).resolve().parents[2]

_GEN = StepGenerated(
    session_id="s-1",
    command_id="s-1.3.0.srm",
    step_index=3,
    role="srm",
    step=step("Wait, 2+2=4", [-0.1, -0.002]),
    context=TriggerContext(params=SessionParams(rho=0.75), hesitation_run_before=1),
    at=12.5,
)

EXAMPLES: list[Message] = [
    SessionRequested(session_id="s-1", question="1+1?", params=SessionParams(policy="specreason", k=3)),
    GenerateStep(
        session_id="s-1",
        command_id="s-1.0.0.lrm",
        step_index=0,
        role="lrm",
        prompt="p",
        max_new_tokens=512,
        trigger="priming",
    ),
    _GEN,
    StepFailed(session_id="s-1", command_id="c", step_index=0, role="lrm", code="backend_error", message="x"),
    JudgeStep(session_id="s-1", command_id="c.judge", step_index=3, prompt="judge", candidate=_GEN),
    JudgeScored(
        session_id="s-1",
        command_id="c.judge",
        step_index=3,
        top_logprobs=(TokenLogprob("7", -0.2),),
        candidate=_GEN,
    ),
    Verdict(
        session_id="s-1", step_index=3, decision="replace", lrm_steps=2, reason="intervention", candidate=_GEN
    ),
    StepCommitted(session_id="s-1", index=3, role="srm", text="t", tokens=2, r_s=0.5),
    SessionFinished(
        session_id="s-1",
        answer="4",
        reason="final_answer",
        steps=4,
        stats=SessionStats(triggers={"offload": 2}),
    ),
    SessionFailed(session_id="s-1", code="backend_error", message="boom"),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    data = encode(message)
    assert decode_message(data) == message
    assert json.loads(data)["type"] == f"{type(message).__name__}.v1"


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_validates_against_the_published_schema(message: Message) -> None:
    schema = json.loads((SCHEMA_DIR / "messages.v1.schema.json").read_text())
    jsonschema.validate(json.loads(encode(message)), schema)


def test_typed_decoder_rejects_messages_that_do_not_belong_on_the_subject() -> None:
    commands: TypedDecoder[GenerateStep | JudgeStep] = TypedDecoder(GenerateStep | JudgeStep)
    assert commands.decode(encode(EXAMPLES[1])) == EXAMPLES[1]
    with pytest.raises(DecodeError, match=r"Invalid value 'StepGenerated\.v1'"):
        commands.decode(encode(_GEN))
    with pytest.raises(DecodeError):
        commands.decode(b"\x00garbage")


def test_old_message_without_new_fields_decodes_and_unknown_fields_are_ignored() -> None:
    # What a v1 producer written before `judge_mode`, `seed` etc. existed sent; plus a field from the future.
    old = b"""{"type": "SessionRequested.v1", "session_id": "old-1", "question": "2+2?",
              "params": {"policy": "trigreason", "rho": 0.8, "added_in_v1_9": [1, 2]},
              "also_new": {"x": 1}}"""
    msg = decode_message(old)
    assert isinstance(msg, SessionRequested)
    assert msg.params.rho == 0.8
    assert msg.params == SessionParams(rho=0.8)  # every missing field takes its default


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"rho": 1.5}, "Expected `float` <= 1"),
        ({"k": 0}, "Expected `int` >= 1"),
        # The set of policies is the registry's (tests/unit/test_policy_registry.py); the spelling is proto's.
        ({"policy": "Magic Policy"}, "Expected `str` matching regex"),
        ({"tau": 0}, "Expected `float` > 0"),
    ],
)
def test_params_out_of_range_are_rejected_with_a_precise_reason(
    params: dict[str, object], match: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=match):
        msgspec.convert(params, SessionParams)


def test_session_ids_must_be_one_subject_token() -> None:
    with pytest.raises(DecodeError):
        decode_message(b'{"type": "SessionRequested.v1", "session_id": "a.b", "question": "q"}')
    assert subject_for(EXAMPLES[0]) == "trig.evt.s-1.requested"
    assert subject_for(_GEN) == "trig.evt.s-1.srm_step"
    assert subject_for(EXAMPLES[1]) == "trig.cmd.lrm"
    assert subject_for(EXAMPLES[4]) == "trig.cmd.lrm"


def test_snapshot_round_trip() -> None:
    snap = SessionSnapshot(session_id="s", question="q", outbox=(EXAMPLES[1],))  # type: ignore[arg-type]
    assert msgspec.json.decode(encode(snap), type=SessionSnapshot) == snap


def test_json_schemas_are_up_to_date() -> None:
    rendered = render_schemas()
    on_disk = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == rendered, "the Structs changed: run `make schemas` and commit the result"


def test_state_diagram_is_up_to_date() -> None:
    doc = ROOT / "docs" / "state-machine.md"
    assert doc.read_text() == render_diagram(), "run `make schemas` and commit docs/state-machine.md"


@pytest.mark.parametrize(
    ("subject", "template"),
    [
        ("trig.cmd.srm", "trig.cmd.srm"),
        ("trig.evt.abc123.committed", "trig.evt.{session}.committed"),
        ("trig.timer.abc123", "trig.timer.{session}"),
        ("trig.dlq.trig.evt.abc123.verdict", "trig.dlq.trig.evt.{session}.verdict"),
        ("trig.dlq.trig.cmd.lrm", "trig.dlq.trig.cmd.lrm"),
    ],
)
def test_subject_templates_hide_the_session(subject: str, template: str) -> None:
    assert subject_template(subject) == template


def test_renamed_attributes_keep_their_v1_wire_names() -> None:
    """``hesitation_run_before``/``_after`` say what the values are; the wire still says ``hesitation_run``,
    so old and new services read each other."""
    context = TriggerContext(params=SessionParams(), hesitation_run_before=2)
    wire = msgspec.json.decode(msgspec.json.encode(context))
    assert wire["hesitation_run"] == 2
    assert "hesitation_run_before" not in wire
    old = msgspec.json.encode({"params": {}, "hesitation_run": 3})
    assert msgspec.json.decode(old, type=TriggerContext).hesitation_run_before == 3
