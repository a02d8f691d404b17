"""The policy registry: v1 flat payloads and stored v1 events/snapshots still decode and mean what they
meant; the new form (``policy`` + ``policy_params``) round-trips; edges refuse unknown names with a
suggestion; a policy defined here is dispatched by the evaluator and the orchestrator core."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
import pytest

from tests.support import CONFIDENT, drive, scripted, step
from trigreason.proto import (
    DEFAULT_HESITATION,
    V1_FLAT_PARAMS,
    GenerateStep,
    SessionFailed,
    SessionParams,
    SessionRequested,
    SessionSnapshot,
    StepGenerated,
    TypedDecoder,
    Verdict,
    decode_message,
    encode,
)
from trigreason.services.orchestrator import decide
from trigreason.services.trigger_evaluator import evaluate
from trigreason.services.trigger_evaluator.policies import (
    POLICY_MODULES_ENV,
    POLICY_SCHEMA,
    Policy,
    PolicyError,
    PolicyRegistry,
    RandomParams,
    SpecReasonParams,
    SrmStep,
    StepVerdict,
    TrigReasonParams,
    render_policy_schema,
)

BUILTIN = PolicyRegistry.builtin()

# -- v1, as older producers wrote it (literal JSON: every knob flat, every default spelled out) ---------

V1_PARAMS = (
    '{"policy": "random", "priming_steps": 3, "tau": 1.2, "rho": 0.7, "k": 4, "m": 2, "offload_p": 0.25,'
    ' "hesitation": ["wait", "hmm"], "judge_threshold": 6.0, "judge_mode": "expected", "judge_top_n": 10,'
    ' "max_tokens": 4096, "max_steps": 100, "step_max_tokens": 256, "temperature": 0.0, "top_p": 1.0,'
    ' "seed": 7, "srm_prompt": "chatml", "lrm_prompt": "raw", "deadline_s": 600.0}'
)
V1_REQUESTED = (
    '{"type": "SessionRequested.v1", "session_id": "old-1", "question": "What is 3 + 4?",'
    f' "params": {V1_PARAMS}, "requested_at": 100.0}}'
)
# A v1 SRM step in flight during an upgrade: its trigger context carries the flat parameters.
V1_SRM_STEP = (
    '{"type": "StepGenerated.v1", "session_id": "old-1", "command_id": "old-1.3.0.srm", "step_index": 3,'
    ' "attempt": 0, "role": "srm", "step": {"text": "Wait, 3 + 4 = 7.", "token_ids": [1, 2],'
    ' "token_texts": ["a", "b"], "token_logprobs": [-0.001, -0.001], "finish_reason": "stop_sequence"},'
    ' "trigger": null, "context": {"params": {"policy": "trigreason", "priming_steps": 1, "tau": 1.05,'
    ' "rho": 0.99, "k": 2, "m": 3, "offload_p": 0.0, "hesitation": ["wait"], "judge_threshold": 7.0,'
    ' "judge_mode": "greedy", "judge_top_n": 20, "max_tokens": 8192, "max_steps": 512,'
    ' "step_max_tokens": 512, "temperature": 0.6, "top_p": 0.95, "seed": 0, "srm_prompt": "chatml",'
    ' "lrm_prompt": "chatml", "deadline_s": 3600.0}, "hesitation_run": 1, "judge_prompt_head": "",'
    ' "judge_prompt_tail": ""}, "at": 5.0}'
)
# A v1 snapshot stored mid-session (awaiting the verdict on step 1 of a SpecReason session).
V1_SNAPSHOT = (
    '{"session_id": "old-2", "question": "What is 3 + 4?", "params": {"policy": "specreason",'
    ' "priming_steps": 20, "tau": 1.05, "rho": 0.85, "k": 2, "m": 1, "offload_p": 0.0,'
    ' "hesitation": ["wait"], "judge_threshold": 5.0, "judge_mode": "greedy", "judge_top_n": 5,'
    ' "max_tokens": 8192, "max_steps": 512, "step_max_tokens": 512, "temperature": 0.6, "top_p": 0.95,'
    ' "seed": 0, "srm_prompt": "chatml", "lrm_prompt": "chatml", "deadline_s": 3600.0},'
    ' "phase": "awaiting_verdict", "steps": [{"index": 0, "role": "srm", "text": "We add.", "tokens": 2,'
    ' "trigger": null, "r_s": 0.5}], "awaiting": "old-2.1.0.srm", "attempt": 0, "lrm_run_left": 0,'
    ' "lrm_run_reason": null, "hesitation_run": 0, "blank_run": 0, "counters": {}, "requested_at": 1.0,'
    ' "last_event_at": 2.0, "answer": null, "end_reason": null, "outbox": [], "outbox_cause": null}'
)


def test_a_v1_flat_request_decodes_and_resolves_to_the_policys_own_parameters() -> None:
    msg = decode_message(V1_REQUESTED)
    assert isinstance(msg, SessionRequested)
    policy, own = BUILTIN.resolve(msg.params)
    assert policy.name == "random"
    assert own == RandomParams(priming_steps=3, offload_p=0.25, tau=1.2, hesitation=("wait", "hmm"))
    # The common parameters are where they always were.
    assert (msg.params.max_tokens, msg.params.seed, msg.params.lrm_prompt) == (4096, 7, "raw")


def test_v1_bounds_still_hold_on_decode() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"<= 1(\.0)? - at `\$.params.rho`"):
        decode_message(V1_REQUESTED.replace('"rho": 0.7', '"rho": 1.7'))


def test_normalising_a_v1_request_gives_the_new_form_and_the_same_meaning() -> None:
    msg = decode_message(V1_REQUESTED)
    assert isinstance(msg, SessionRequested)
    new = BUILTIN.normalise(msg.params)
    wire = msgspec.json.decode(encode(SessionRequested(session_id="n", question="q", params=new)))
    assert set(wire["params"]) == {f for f in SessionParams.__struct_fields__ if f not in _V1_FLAT}
    assert wire["params"]["policy_params"] == {
        "priming_steps": 3, "offload_p": 0.25, "tau": 1.2, "hesitation": ["wait", "hmm"],
    }  # fmt: skip
    assert BUILTIN.resolve(new) == BUILTIN.resolve(msg.params)
    again = decode_message(encode(SessionRequested(session_id="n", question="q", params=new)))
    assert isinstance(again, SessionRequested)
    assert again.params == new


_V1_FLAT = set(V1_FLAT_PARAMS)


def test_a_v1_srm_step_in_flight_gets_the_verdict_it_would_have_got() -> None:
    event = TypedDecoder[StepGenerated](StepGenerated).decode(V1_SRM_STEP)
    verdict = evaluate(event)
    assert isinstance(verdict, Verdict)
    # hesitation_run 1 + this hesitating step reaches k = 2: intervention, m = 3 LRM steps.
    assert (verdict.decision, verdict.reason, verdict.lrm_steps, verdict.hesitates) == (
        "replace", "intervention", 3, True,
    )  # fmt: skip


def test_a_stored_v1_snapshot_goes_on_with_its_parameters() -> None:
    state = msgspec.json.decode(V1_SNAPSHOT, type=SessionSnapshot)
    assert BUILTIN.resolve(state.params)[1] == SpecReasonParams(judge_threshold=5.0, judge_top_n=5)
    candidate = StepGenerated(
        session_id="old-2", command_id="old-2.1.0.srm", step_index=1, role="srm", step=step("3 + 4 = 7.")
    )
    verdict = Verdict(session_id="old-2", step_index=1, decision="accept", candidate=candidate)
    state, out = decide(state, verdict)
    (command,) = [o for o in out if isinstance(o, GenerateStep)]
    # SpecReason's next SRM step carries a judge prompt, and its judge call asks for judge_top_n = 5.
    assert command.role == "srm"
    assert command.context is not None
    assert command.context.judge_prompt_head
    judge = evaluate(
        StepGenerated(
            session_id="old-2",
            command_id=command.command_id,
            step_index=2,
            role="srm",
            step=step("Done."),
            context=command.context,
        )
    )
    assert not isinstance(judge, Verdict)
    assert judge.top_n == 5


# -- the edges: one constructor that checks ----------------------------------------------------------


def test_session_params_takes_flat_or_nested_and_fills_defaults() -> None:
    flat = BUILTIN.session_params({"policy": "trigreason", "rho": 0.5, "max_tokens": 64.0})
    nested = BUILTIN.session_params({"max_tokens": 64, "policy_params": {"rho": 0.5}}, policy="trigreason")
    assert flat == nested
    assert flat.max_tokens == 64
    assert isinstance(flat.max_tokens, int)
    assert flat.policy_params == msgspec.json.decode(msgspec.json.encode(TrigReasonParams(rho=0.5)))
    assert flat.tau is msgspec.UNSET  # the new form carries no v1 flat knob


def test_another_policys_parameter_is_checked_then_ignored_as_in_v1() -> None:
    params = BUILTIN.session_params({"policy": "lrm-only", "tau": 1.2, "judge_threshold": 3})
    assert params.policy_params == {}
    with pytest.raises(PolicyError, match=r"> 0.0 - at `\$.tau`"):
        BUILTIN.session_params({"policy": "lrm-only", "tau": -1})


@pytest.mark.parametrize(
    ("values", "code", "match"),
    [
        ({"rhoo": 0.5}, "invalid_params", "unknown parameter 'rhoo' (did you mean 'rho'?)"),
        ({"policy": "randon"}, "unknown_policy", "unknown policy 'randon' (did you mean 'random'?)"),
        (
            {"policy": "specreason", "policy_params": {"judge_treshold": 5}},
            "invalid_params",
            "'judge_threshold'",
        ),
        ({"policy_params": {"nope": 1}}, "invalid_params", "policy 'trigreason' takes no parameter 'nope'"),
        ({"policy_params": None}, "invalid_params", "policy_params must be an object"),
        ({"k": 0}, "invalid_params", ">= 1"),
        ({"k": 2.5}, "invalid_params", "Expected `int`, got `float`"),
        ({"max_tokens": "many"}, "invalid_params", "Expected `int`, got `str`"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(values: dict[str, object], code: str, match: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(match)) as exc:
        BUILTIN.session_params(values)
    assert exc.value.code == code


def test_the_orchestrators_decoder_dead_letters_an_unknown_policy_and_normalises_v1() -> None:
    from trigreason.services.orchestrator import Orchestrator

    orchestrator = Orchestrator(bus=None, policies=BUILTIN)  # type: ignore[arg-type]  # decoding only
    msg = orchestrator.decoder.decode(V1_REQUESTED)
    assert isinstance(msg, SessionRequested)
    assert msg.params == BUILTIN.normalise(msg.params)
    with pytest.raises(msgspec.ValidationError, match="unknown policy 'magic'"):
        orchestrator.decoder.decode(V1_REQUESTED.replace('"policy": "random"', '"policy": "magic"'))
    with pytest.raises(msgspec.ValidationError, match="unknown field `x`"):
        orchestrator.decoder.decode(V1_REQUESTED.replace('"priming_steps": 3,', '"policy_params": {"x": 1},'))


def test_the_pure_core_fails_a_session_whose_policy_it_does_not_know() -> None:
    state, out = decide(
        msgspec.json.decode(b'{"session_id": "s"}', type=SessionSnapshot),
        SessionRequested(session_id="s", question="q", params=SessionParams(policy="magic")),
    )
    (failed,) = out
    assert isinstance(failed, SessionFailed)
    assert failed.code == "unknown_policy"
    assert state.phase == "failed"


# -- a policy defined here ---------------------------------------------------------------------------


class EveryOtherParams(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    priming_steps: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    period: Annotated[int, msgspec.Meta(ge=1, le=100)] = 2


def _every_other(step: SrmStep, p: EveryOtherParams) -> StepVerdict:
    replace = step.index % p.period == 1
    return StepVerdict(replace=replace, lrm_steps=1, reason="every_other" if replace else None)


POLICY = Policy(
    name="every-other",
    params=EveryOtherParams,
    summary="test policy: the LRM rewrites every period-th SRM step",
    description="Defined in the test suite to show a policy needs no other file.",
    primes=True,
    on_step=_every_other,
    triggers=("every_other",),
)


def test_a_policy_defined_here_is_loaded_by_name_and_dispatched() -> None:
    registry = PolicyRegistry.from_env({POLICY_MODULES_ENV: __name__})
    assert registry.names()[-1] == "every-other"
    assert len(registry) == len(BUILTIN) + 1
    params = registry.session_params({"policy": "every-other", "priming_steps": 1, "period": 3})
    trace = drive(
        "q",
        params,
        srm=scripted("a", "b", "So \\boxed{7}."),
        lrm=scripted("Prime.", "B."),
        policies=registry,
    )
    assert [(s.role, s.trigger) for s in trace.state.steps] == [
        ("lrm", "priming"), ("lrm", "every_other"), ("srm", None), ("srm", None),
    ]  # fmt: skip
    assert trace.state.counters.triggers == {"priming": 1, "every_other": 1}
    with pytest.raises(PolicyError, match="unknown policy 'every-other'"):
        BUILTIN.session_params({"policy": "every-other"})


def test_a_policy_is_checked_when_it_is_defined() -> None:
    class Loose(msgspec.Struct, frozen=True):
        x: int = 1

    class NoDefault(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        x: int

    class Clash(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        seed: int = 1

    def ok(step: SrmStep, p: object) -> StepVerdict:
        return StepVerdict()

    bad: list[tuple[type[msgspec.Struct], str]] = [
        (Loose, "forbidding unknown fields"),
        (NoDefault, "needs a default"),
        (Clash, "common"),
    ]
    for kind, match in bad:
        with pytest.raises(TypeError, match=match):
            Policy(name="x", params=kind, summary="", description="", on_step=ok)
    with pytest.raises(TypeError, match="no priming_steps"):
        Policy(name="x", params=SpecReasonParams, summary="", description="", on_step=ok, primes=True)
    with pytest.raises(ValueError, match="two policies named 'trigreason'"):
        PolicyRegistry([*BUILTIN, *BUILTIN])


def test_listing_gives_each_parameter_with_its_default_and_bounds() -> None:
    trig = BUILTIN.get("trigreason")
    info = {p.name: p for p in trig.param_info()}
    assert info["rho"].default == 0.85
    assert info["rho"].schema["maximum"] == 1
    assert info["hesitation"].default == list(DEFAULT_HESITATION)
    assert trig.all_triggers == ("priming", "offload", "intervention")
    # likelihood: given the LRM log-probabilities of each step in the input
    assert [p.name for p in BUILTIN if p.replayable] == ["trigreason", "srm-only", "random", "likelihood"]


def test_random_reports_the_same_signals_as_trigreason_with_its_own_tau() -> None:
    generated = StepGenerated(
        session_id="s",
        command_id="s.0.0.srm",
        step_index=0,
        role="srm",
        step=step("Hmm.", [CONFIDENT] * 4),
        context=None,
    )
    from trigreason.proto import TriggerContext

    params = BUILTIN.session_params({"policy": "random", "offload_p": 0.0})
    verdict = evaluate(msgspec.structs.replace(generated, context=TriggerContext(params=params)))
    assert isinstance(verdict, Verdict)
    assert (verdict.decision, verdict.r_s, verdict.hesitates) == ("accept", 1.0, True)


def test_the_policy_schema_is_up_to_date() -> None:
    assert POLICY_SCHEMA.read_text(encoding="utf-8") == render_policy_schema(BUILTIN), (
        "the policies changed: run `make schemas` and commit the result"
    )
    schema = msgspec.json.decode(POLICY_SCHEMA.read_bytes())
    assert [b["properties"]["policy"]["const"] for b in schema["oneOf"]] == list(BUILTIN.names())


def test_the_built_in_policies_look_different_on_a_plot() -> None:
    """The Pareto plot and the eval report draw every policy and end point at once: no two built-in
    policies share a colour, nor a marker."""
    policies = list(PolicyRegistry.from_env({}))
    for attr in ("colour", "marker"):
        seen: dict[str, str] = {}
        for p in policies:
            value = getattr(p, attr)
            assert value not in seen, f"{p.name} and {seen[value]} share the {attr} {value!r}"
            seen[value] = p.name
