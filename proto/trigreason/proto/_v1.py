"""Wire contract, version 1.

Every message on the bus is one of the tagged ``Struct``s below, encoded as JSON. The tag field is
``type``; its value names the message and its version (``"GenerateStep.v1"``), so a consumer can tell
an incompatible future message from garbage. Compatibility rules (msgspec's, see proto/README.md):

* a field added later always has a default, so an old message still decodes;
* unknown fields are ignored, so an old service decodes a newer message;
* a field is never removed or retyped within v1.

Times are wall-clock UNIX seconds stamped by the service that observed them; the pure core only ever
reads them from events, it never asks a clock.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

__all__ = [
    "DEFAULT_HESITATION",
    "MAX_CONTEXT_BYTES",
    "MAX_CONVERSATION_BYTES",
    "MAX_QUESTION_CHARS",
    "MAX_STOP_SEQUENCES",
    "V1_FLAT_PARAMS",
    "BackendLimits",
    "BackendTimings",
    "ChatRole",
    "ChatTurn",
    "CloudUnavailable",
    "Command",
    "CommittedStep",
    "DeadlineReached",
    "Event",
    "FinishReason",
    "GenerateStep",
    "GeneratedStep",
    "JudgeMode",
    "JudgeScored",
    "JudgeStep",
    "Message",
    "MessageDeadLettered",
    "Phase",
    "PolicyName",
    "PromptFamily",
    "Role",
    "SessionFailed",
    "SessionFinished",
    "SessionId",
    "SessionParams",
    "SessionRequested",
    "SessionSnapshot",
    "SessionStats",
    "StepCommitted",
    "StepFailed",
    "StepGenerated",
    "TokenLogprob",
    "TriggerContext",
    "TriggerKind",
    "Verdict",
]

Role = Literal["srm", "lrm"]
# A policy's name. Policies are plug-ins (the registry in trigreason.services.trigger_evaluator.policies),
# so the contract fixes the spelling, not the set: the services check the name against their registry.
PolicyName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
# Why the LRM wrote a step (or, for ``judge_reject``, why an SRM step was replaced under SpecReason): the
# built-in kinds are priming, offload, intervention, judge_reject and random; a plug-in policy may name
# its own (v1 first had a Literal of the five: widening it decodes every older message).
TriggerKind = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
FinishReason = Literal["length", "eos_token", "stop_sequence"]
PromptFamily = Literal["chatml", "deepseek-r1", "raw"]
JudgeMode = Literal["greedy", "expected"]
# Edge-cloud (docs/sites.md): what an LRM step does while the cloud cannot be reached.
CloudUnavailablePolicy = Literal["wait", "srm", "fail"]

DEFAULT_HESITATION: tuple[str, ...] = (
    "wait",
    "hmm",
    "alternatively",
    "but wait",
    "let me re-check",
    "actually",
)

# Size bounds that keep every message under NATS' default max_payload (1 MiB). The largest messages carry
# the rendered context up to three times (snapshot: committed steps, the pending command's prompt and, under
# SpecReason, the judge prompt), so the question plus the committed text is capped at MAX_CONTEXT_BYTES
# (a session that reaches it finishes with reason ``context_limit``) and a step at 4,096 tokens.
MAX_QUESTION_CHARS = 20_000
# A conversation (system messages, earlier turns, the question) travels in the request, the snapshot and
# each prompt: bounded so that three copies and the committed steps still fit a message.
MAX_CONVERSATION_BYTES = 64 * 1024
# OpenAI's bound on `stop`; each sequence is at most _MAX_STOP_CHARS characters.
MAX_STOP_SEQUENCES = 4
_MAX_STOP_CHARS = 256
MAX_CONTEXT_BYTES = 192 * 1024
_MAX_STEP_TOKENS = 4096
_MAX_BUDGET_TOKENS = 65_536

_Id = Annotated[str, Meta(min_length=1, max_length=256)]
# A session id is one NATS subject token: letters, digits, '_' and '-'.
SessionId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
_NonNegInt = Annotated[int, Meta(ge=0)]
_Seconds = Annotated[float, Meta(ge=0)]


_Word = Annotated[str, Meta(min_length=1, max_length=64)]
_Hesitation = Annotated[tuple[_Word, ...], Meta(max_length=64)]


class SessionParams(Struct, kw_only=True, frozen=True, forbid_unknown_fields=False):
    """Everything a request may tune: the common parameters, and the policy's own.

    The policy's own parameters travel as a tagged union: ``policy`` is the tag, ``policy_params`` the
    policy's parameter Struct as a JSON object. The set of policies is open (plug-ins), so proto keeps
    the object and the policy registry validates and types it where a message enters the system (the
    gateway, the orchestrator's consumer) and where it is used (the evaluator, the orchestrator's core).

    v1 compatibility: v1 first carried every policy's knobs flat in this object (``tau``, ``rho``, ...).
    Those names still decode into the ``UNSET``-defaulted fields below, with their v1 bounds, and the
    registry reads them (over ``policy_params``) when it resolves the policy's parameters; new producers
    never write them (an ``UNSET`` field is not encoded).
    """

    policy: PolicyName = "trigreason"
    # The policy's own parameters (its registered Struct, as an object); missing ones take its defaults.
    policy_params: dict[str, Any] = {}
    # Termination: committed-token budget and step cap.
    max_tokens: Annotated[int, Meta(ge=1, le=_MAX_BUDGET_TOKENS)] = 8192
    max_steps: Annotated[int, Meta(ge=1, le=100_000)] = 512
    # Decoding, per step.
    step_max_tokens: Annotated[int, Meta(ge=1, le=_MAX_STEP_TOKENS)] = 512
    temperature: Annotated[float, Meta(ge=0, le=10)] = 0.6
    top_p: Annotated[float, Meta(gt=0, le=1)] = 0.95
    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] = 0
    # Prompt rendering per model family: the chat template is applied by the orchestrator.
    srm_prompt: PromptFamily = "chatml"
    lrm_prompt: PromptFamily = "chatml"
    # Wall-clock seconds from the request after which an unfinished session fails (`deadline_exceeded`).
    deadline_s: Annotated[float, Meta(ge=1, le=7 * 24 * 3600)] = 3600.0
    # Edge-cloud: while the cloud is unreachable an LRM step waits for it (within the deadline), or the
    # session fails at once (`cloud_unavailable`); `srm` goes on with the SRM alone (docs/sites.md).
    on_cloud_unavailable: CloudUnavailablePolicy = "wait"
    # -- v1's flat policy knobs, decode-only (see above); the registry maps each to the policies that own it.
    priming_steps: Annotated[int, Meta(ge=0, le=4096)] | UnsetType = UNSET
    tau: Annotated[float, Meta(gt=0, le=1e6)] | UnsetType = UNSET
    rho: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    k: Annotated[int, Meta(ge=1, le=1024)] | UnsetType = UNSET
    m: Annotated[int, Meta(ge=1, le=1024)] | UnsetType = UNSET
    offload_p: Annotated[float, Meta(ge=0, le=1)] | UnsetType = UNSET
    hesitation: _Hesitation | UnsetType = UNSET
    judge_threshold: Annotated[float, Meta(ge=0, le=9)] | UnsetType = UNSET
    judge_mode: JudgeMode | UnsetType = UNSET
    judge_top_n: Annotated[int, Meta(ge=1, le=100)] | UnsetType = UNSET


# The names of SessionParams' v1 flat policy knobs, in declaration order.
V1_FLAT_PARAMS: tuple[str, ...] = (
    "priming_steps",
    "tau",
    "rho",
    "k",
    "m",
    "offload_p",
    "hesitation",
    "judge_threshold",
    "judge_mode",
    "judge_top_n",
)


def flat_params(params: SessionParams) -> dict[str, Any]:
    """The parameters as one flat object, v1's shape: the common ones, then the policy's own (as given
    in ``policy_params`` and in any v1 flat knob). For views and listings; the registry fills defaults."""
    out: dict[str, Any] = msgspec.to_builtins(params)
    own = out.pop("policy_params", {})
    return {**out, **own, **{k: out[k] for k in V1_FLAT_PARAMS if k in out}}


ChatRole = Literal["system", "user", "assistant"]


class ChatTurn(Struct, kw_only=True, frozen=True):
    """One turn of the conversation a session answers: a system message, a user or an assistant turn.
    Earlier assistant turns are context the models read, never steps of the session."""

    role: ChatRole
    content: Annotated[str, Meta(max_length=MAX_CONVERSATION_BYTES)]


class BackendLimits(Struct, kw_only=True, frozen=True):
    """What a role's inference backend accepts (TGI's ``GET /info``), published by its workers on the bus
    so the gateway refuses a request beyond them up front. ``None``: the backend did not say."""

    role: Role
    max_top_n_tokens: int | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_stop_sequences: int | None = None
    backend: str = ""  # the backend's name, for messages
    at: float = 0.0


class BackendTimings(Struct, kw_only=True, frozen=True):
    """Where the time of one backend call went, as measured by the worker."""

    queued_s: _Seconds = 0.0  # from command publish to worker pick-up
    backend_s: _Seconds = 0.0  # inside the inference server call
    prompt_tokens: _NonNegInt = 0
    cached_prompt_tokens: _NonNegInt = 0  # prefix the server did not have to re-read


class TokenLogprob(Struct, frozen=True, array_like=True):
    """One candidate token and its log-probability (encoded as a two-element array)."""

    text: str
    logprob: float


class GeneratedStep(Struct, kw_only=True, frozen=True):
    """The output of one generation call: one reasoning step."""

    text: str
    token_ids: tuple[int, ...] = ()
    token_texts: tuple[str, ...] = ()
    # log-probability of each sampled token, same length as token_ids
    token_logprobs: tuple[float, ...] = ()
    finish_reason: FinishReason = "stop_sequence"

    @property
    def tokens(self) -> int:
        return len(self.token_logprobs) if self.token_logprobs else len(self.token_ids)


class TriggerContext(Struct, kw_only=True, frozen=True):
    """What the stateless trigger-evaluator needs to judge an SRM step.

    The orchestrator puts it into the SRM ``GenerateStep``; the worker echoes it unchanged into
    ``StepGenerated``; the evaluator echoes it into ``JudgeStep``/``JudgeScored``. No service keeps it.
    """

    params: SessionParams
    # Consecutive hesitating SRM steps before this one (on the wire: ``hesitation_run``).
    hesitation_run_before: _NonNegInt = field(default=0, name="hesitation_run")
    # SpecReason: the judge prompt is head + candidate step + tail (rendered for the LRM's family).
    judge_prompt_head: str = ""
    judge_prompt_tail: str = ""


class _Msg(Struct, kw_only=True, frozen=True, tag_field="type"):
    """Base of every bus message: each names its session."""

    session_id: SessionId


class SessionRequested(_Msg, tag="SessionRequested.v1", kw_only=True, frozen=True):
    # The last user turn: what the reasoning answers.
    question: Annotated[str, Meta(min_length=1, max_length=MAX_QUESTION_CHARS)]
    params: SessionParams = SessionParams()
    requested_at: float = 0.0
    # The conversation, when the request was one (system messages, earlier user and assistant turns, the
    # question as its last user turn), rendered through each model's chat template; empty for a lone
    # question.
    messages: tuple[ChatTurn, ...] = ()
    # Stop sequences: the session ends at the first one in its committed text (which is cut before it).
    stop: Annotated[
        tuple[Annotated[str, Meta(min_length=1, max_length=_MAX_STOP_CHARS)], ...],
        Meta(max_length=MAX_STOP_SEQUENCES),
    ] = ()


class GenerateStep(_Msg, tag="GenerateStep.v1", kw_only=True, frozen=True):
    """Command to a worker of ``role``: continue ``prompt`` by one step."""

    command_id: _Id
    step_index: _NonNegInt
    attempt: _NonNegInt = 0
    role: Role
    prompt: str
    max_new_tokens: Annotated[int, Meta(ge=1)]
    stop: tuple[str, ...] = ("\n\n",)
    temperature: float = 0.6
    top_p: float = 0.95
    seed: int = 0
    trigger: TriggerKind | None = None  # why the LRM writes this step (None for SRM steps)
    context: TriggerContext | None = None  # set for SRM steps only
    issued_at: float = 0.0


class StepGenerated(_Msg, tag="StepGenerated.v1", kw_only=True, frozen=True):
    """A worker's answer to ``GenerateStep``."""

    command_id: _Id
    step_index: _NonNegInt
    attempt: _NonNegInt = 0
    role: Role
    step: GeneratedStep
    trigger: TriggerKind | None = None
    context: TriggerContext | None = None
    timings: BackendTimings = BackendTimings()
    at: float = 0.0


class StepFailed(_Msg, tag="StepFailed.v1", kw_only=True, frozen=True):
    """A worker gave up on a command (non-retryable backend error or deliveries exhausted)."""

    command_id: _Id
    step_index: _NonNegInt
    attempt: _NonNegInt = 0
    role: Role
    code: str
    message: str
    at: float = 0.0


class JudgeStep(_Msg, tag="JudgeStep.v1", kw_only=True, frozen=True):
    """An LRM call about an SRM step: a judge (SpecReason: score it from one token's log-probabilities)
    or, when ``continuation`` is set, a scoring call (the LRM's log-probability of each token of
    ``continuation`` read after ``prompt``, one prefill; the likelihood policy)."""

    command_id: _Id
    step_index: _NonNegInt
    attempt: _NonNegInt = 0
    prompt: str
    top_n: Annotated[int, Meta(ge=1)] = 20
    candidate: StepGenerated
    issued_at: float = 0.0
    continuation: str = ""


class JudgeScored(_Msg, tag="JudgeScored.v1", kw_only=True, frozen=True):
    command_id: _Id
    step_index: _NonNegInt
    attempt: _NonNegInt = 0
    top_logprobs: tuple[TokenLogprob, ...]
    candidate: StepGenerated
    timings: BackendTimings = BackendTimings()
    at: float = 0.0
    # A scoring call's answer: each continuation token and the LRM's log-probability of it.
    scored: tuple[TokenLogprob, ...] = ()


class Verdict(_Msg, tag="Verdict.v1", kw_only=True, frozen=True):
    """The trigger-evaluator's decision on one SRM step."""

    step_index: _NonNegInt
    attempt: _NonNegInt = 0
    decision: Literal["accept", "replace"]
    # For ``replace``: how many steps the LRM writes from this index on, and why.
    lrm_steps: _NonNegInt = 0
    reason: TriggerKind | None = None
    candidate: StepGenerated
    r_s: float = 0.0
    hesitates: bool = False
    # The hesitation run once this verdict holds: this step counted, 0 after a replace (on the wire:
    # ``hesitation_run``, its v1 name).
    hesitation_run_after: _NonNegInt = field(default=0, name="hesitation_run")
    judge_score: float | None = None
    judge_timings: BackendTimings | None = None
    at: float = 0.0
    # A scoring policy's statistic of the LRM log-probabilities and the threshold it was held against
    # (the browser's badge); ``judge_timings`` then times the scoring call.
    score_stat: float | None = None
    score_threshold: float | None = None
    scored_tokens: _NonNegInt = 0


class StepCommitted(_Msg, tag="StepCommitted.v1", kw_only=True, frozen=True):
    """A step entered the trajectory for good."""

    index: _NonNegInt
    role: Role
    text: str
    tokens: _NonNegInt
    trigger: TriggerKind | None = None
    r_s: float | None = None


class SessionStats(Struct, kw_only=True, frozen=True):
    srm_tokens: int = 0
    lrm_tokens: int = 0
    srm_wasted_tokens: int = 0
    srm_token_ratio: float = 0.0
    srm_steps: int = 0
    lrm_steps: int = 0
    srm_calls: int = 0
    lrm_calls: int = 0  # generation, judge and scoring calls
    judge_calls: int = 0
    # Scoring calls (likelihood policy): calls, the LRM prompt tokens they read and their backend time
    # (also counted in lrm_calls, lrm_prompt_tokens and lrm_backend_s).
    score_calls: int = 0
    score_prompt_tokens: int = 0
    score_backend_s: float = 0.0
    triggers: dict[str, int] = {}
    lrm_prompt_tokens: int = 0
    lrm_cached_prompt_tokens: int = 0
    srm_prompt_tokens: int = 0
    wall_s: float = 0.0
    srm_backend_s: float = 0.0
    lrm_backend_s: float = 0.0


class SessionFinished(_Msg, tag="SessionFinished.v1", kw_only=True, frozen=True):
    answer: str | None
    # final_answer | eos | stop | token_budget | step_cap | context_limit | stalled
    reason: str
    steps: _NonNegInt
    stats: SessionStats


class SessionFailed(_Msg, tag="SessionFailed.v1", kw_only=True, frozen=True):
    code: str
    message: str
    stats: SessionStats = SessionStats()


class DeadlineReached(_Msg, tag="DeadlineReached.v1", kw_only=True, frozen=True):
    """The session's deadline timer. Armed by the orchestrator when a session starts (on the timer
    subject), it is handed back to the orchestrator once ``deadline_at`` has passed."""

    deadline_at: float


class MessageDeadLettered(_Msg, tag="MessageDeadLettered.v1", kw_only=True, frozen=True):
    """A message of this session went to the dead-letter stream: the session cannot go on."""

    origin_subject: str
    reason: str
    # The command the dead message was or answered, where it could be read; None for unreadable bytes.
    command_id: str | None = None
    at: float = 0.0


class CloudUnavailable(_Msg, tag="CloudUnavailable.v1", kw_only=True, frozen=True):
    """At an edge site: the cloud does not answer while the session awaits the LRM step ``command_id``, and
    the request said ``on_cloud_unavailable=srm``: the SRM writes that step instead (docs/sites.md)."""

    command_id: _Id
    at: float = 0.0


Command = GenerateStep | JudgeStep
Event = SessionRequested | StepGenerated | StepFailed | JudgeScored | Verdict
Message = (
    SessionRequested
    | GenerateStep
    | StepGenerated
    | StepFailed
    | JudgeStep
    | JudgeScored
    | Verdict
    | StepCommitted
    | SessionFinished
    | SessionFailed
    | DeadlineReached
    | MessageDeadLettered
    | CloudUnavailable
)


Phase = Literal["new", "awaiting_lrm", "awaiting_verdict", "finished", "failed"]


class CommittedStep(Struct, kw_only=True, frozen=True):
    index: int
    role: Role
    text: str
    tokens: int
    trigger: TriggerKind | None = None
    r_s: float | None = None


class SessionSnapshot(Struct, kw_only=True, frozen=True):
    """The orchestrator's state of one session; stored in the KV bucket, revised with compare-and-set."""

    session_id: str
    question: str = ""
    params: SessionParams = SessionParams()
    messages: tuple[ChatTurn, ...] = ()  # the conversation (the question is its last user turn)
    stop: tuple[str, ...] = ()
    phase: Phase = "new"
    steps: tuple[CommittedStep, ...] = ()
    # The command whose answer the session waits for, and the attempt of the current step index.
    awaiting: str | None = None
    attempt: int = 0
    # LRM steps still owed by the current priming / offload / intervention run, and why.
    lrm_run_left: int = 0
    lrm_run_reason: TriggerKind | None = None
    hesitation_run: int = 0
    blank_run: int = 0
    # Raw counters; SessionStats is derived from them (see core.accounting).
    counters: SessionStats = SessionStats()
    requested_at: float = 0.0
    last_event_at: float = 0.0
    answer: str | None = None
    end_reason: str | None = None
    # What the last decision owes the bus (outbox), and the message id of the event that caused it: when
    # exactly that event is redelivered (a crash between the compare-and-set and the publish), whatever of
    # the outbox is not on the bus yet is published again. Any other stale event publishes nothing.
    outbox: tuple[GenerateStep | StepCommitted | SessionFinished | SessionFailed | DeadlineReached, ...] = ()
    outbox_cause: str | None = None
