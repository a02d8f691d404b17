"""The policy registry: what a trigger policy is, and the one place that knows which policies exist.

A policy is one module that builds a ``Policy``: its name, its parameters (a msgspec Struct with defaults
and bounds), its pure decision functions, what it needs from the orchestrator, whether it primes, and a
one-paragraph description. Every other part of the system (the evaluator, the orchestrator, the gateway,
the CLI, eval, replay, the report, the browser) reads a ``PolicyRegistry`` instead of naming policies.

On the wire a session carries ``policy`` (the tag) and ``policy_params`` (the policy's Struct as an
object); proto cannot enumerate an open set of policies, so the registry types and validates the object
at the edges (``session_params``, ``normalise``) and where it is used (``resolve``).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import msgspec

from trigreason.proto import (
    V1_FLAT_PARAMS,
    SessionParams,
    TokenLogprob,
    TrigReasonError,
)

__all__ = [
    "POLICY_MODULES_ENV",
    "JudgeRequest",
    "Needs",
    "ParamInfo",
    "Policy",
    "PolicyError",
    "PolicyInfo",
    "PolicyRegistry",
    "ScoreRequest",
    "SrmStep",
    "StepVerdict",
    "did_you_mean",
]

# Extra policy modules to load, comma-separated import paths (each defines ``POLICY`` or ``POLICIES``).
POLICY_MODULES_ENV = "TRIGREASON_POLICY_MODULES"

P = TypeVar("P", bound=msgspec.Struct)

# What a policy asks of the orchestrator beyond SRM steps: nothing, an LRM judge call per SRM step (the
# orchestrator renders the judge prompt into the trigger context; the evaluator sends ``JudgeStep``), or
# an LRM scoring call per SRM step (the orchestrator puts the LRM's generation prompt into the context;
# the evaluator sends a ``JudgeStep`` whose ``continuation`` is the step, and the LRM returns the
# log-probability of each of its tokens).
Needs = Literal["nothing", "judge", "score"]

_COMMON = frozenset(f for f in SessionParams.__struct_fields__ if f not in (*V1_FLAT_PARAMS, "policy_params"))


class PolicyError(TrigReasonError):
    """An unknown policy or a parameter it does not take / out of its bounds (HTTP 422, dead letter)."""

    code = "invalid_params"


class SrmStep(msgspec.Struct, frozen=True, kw_only=True):
    """What a decision function sees of one SRM step."""

    text: str
    token_logprobs: tuple[float, ...] = ()
    index: int = 0
    attempt: int = 0
    # Consecutive hesitating SRM steps before this one.
    hesitation_run: int = 0
    # The session's seed (common parameter): a random policy draws from it, reproducibly.
    seed: int = 0


class StepVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """A policy's decision on one SRM step (the evaluator turns it into a ``Verdict``)."""

    replace: bool = False
    # For a replace: how many steps the LRM writes from this index on (>= 1), and the trigger kind.
    lrm_steps: int = 0
    reason: str | None = None
    # Signals reported with the verdict (the browser and replay show them).
    r_s: float = 0.0
    hesitates: bool = False
    # The hesitation run once this verdict holds (0 after a replace).
    hesitation_run: int = 0
    judge_score: float | None = None
    # A scoring policy's statistic of the LRM log-probabilities, and its threshold (the browser's badge).
    score_stat: float | None = None
    score_threshold: float | None = None
    # What ``triggers replay`` calls this verdict (default: ``reason``, or ``accept``).
    label: str | None = None


class JudgeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A judge policy's answer to an SRM step: ask the LRM to score it first."""

    top_n: int = 20


class ScoreRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A scoring policy's answer to an SRM step: ask the LRM for its log-probability of each token."""


OnStep = Callable[[SrmStep, Any], "StepVerdict | JudgeRequest | ScoreRequest"]
OnJudged = Callable[[SrmStep, Sequence[TokenLogprob], Any], StepVerdict]


class ParamInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One parameter of a policy, for listings and flags: its JSON Schema says type and bounds."""

    name: str
    default: Any
    schema: dict[str, Any]
    help: str = ""


class PolicyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a policy is, for listings (``trigreason policies --json``) and documents."""

    name: str
    summary: str
    description: str
    needs: Needs
    primes: bool
    uses_srm: bool
    uses_lrm: bool
    replayable: bool
    in_default_eval: bool
    triggers: tuple[str, ...]
    colour: str
    marker: str
    marks: dict[str, str]
    badges: dict[str, str]
    accept_badge: tuple[str, str] | None
    params: tuple[ParamInfo, ...]
    # The JSON Schema of its parameters object (``policy_params``).
    params_schema: dict[str, Any]


@dataclass(frozen=True, kw_only=True, eq=False)
class Policy(Generic[P]):
    """One trigger policy. ``on_step`` is required when ``uses_srm``; ``on_judged`` when it needs a judge
    or a scoring call (it then receives the scored tokens of the step and their LRM log-probabilities)."""

    name: str
    params: type[P]
    # One line, and one paragraph (``trigreason policies``, the OpenAPI document, the browser).
    summary: str
    description: str
    needs: Needs = "nothing"
    # Steps 0..priming_steps-1 are written by the LRM: the params Struct has an int ``priming_steps``.
    primes: bool = False
    # False: the LRM writes every step and the evaluator never sees one (LRM-only).
    uses_srm: bool = True
    # False: the LRM is never called, neither to write nor to judge (SRM-only).
    uses_lrm: bool = True
    on_step: OnStep | None = None
    on_judged: OnJudged | None = None
    # The trigger kinds its verdicts give (legends, badges); priming is implied by ``primes``.
    triggers: tuple[str, ...] = ()
    # Run by ``eval`` when no --policies is given.
    in_default_eval: bool = True
    # Report colour and matplotlib marker; one-letter marks of its trigger kinds in step timelines (the
    # kind's first letter, upper case, unless given here).
    colour: str = "#6c757d"
    marker: str = "o"
    marks: Mapping[str, str] | None = None
    # The session browser's badges: per replace reason, and for an accepted SRM step (kind, text), as
    # templates of the verdict's fields (r_s, judge_score, run: the hesitation run) and the session's
    # parameters, e.g. "offload r_s {r_s:.2f} > ρ {rho}". A reason with none shows its name.
    badges: Mapping[str, str] | None = None
    accept_badge: tuple[str, str] | None = None
    # Help per parameter name (CLI flags, listings); the Struct's field comments are not introspectable.
    param_help: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check(self)

    @property
    def replayable(self) -> bool:
        """Decidable offline from a recorded SRM step (``triggers replay``): alone, or for a scoring
        policy with the LRM's log-probabilities of the step recorded beside it."""
        return self.uses_srm and self.needs in ("nothing", "score")

    @property
    def all_triggers(self) -> tuple[str, ...]:
        return (("priming",) if self.primes else ()) + self.triggers

    def trigger_marks(self) -> dict[str, str]:
        given = self.marks or {}
        return {kind: given.get(kind, kind[:1].upper()) for kind in self.all_triggers}

    def defaults(self) -> P:
        return self.params()

    def param_info(self) -> tuple[ParamInfo, ...]:
        _, components = msgspec.json.schema_components([self.params])
        props: dict[str, Any] = components[self.params.__name__].get("properties", {})
        defaults = _as_json(self.params())
        helps = self.param_help or {}
        return tuple(
            ParamInfo(name=n, default=defaults[n], schema=props.get(n, {}), help=helps.get(n, ""))
            for n in self.params.__struct_fields__
        )

    def info(self) -> PolicyInfo:
        _, components = msgspec.json.schema_components([self.params])
        return PolicyInfo(
            name=self.name,
            summary=self.summary,
            description=self.description,
            needs=self.needs,
            primes=self.primes,
            uses_srm=self.uses_srm,
            uses_lrm=self.uses_lrm,
            replayable=self.replayable,
            in_default_eval=self.in_default_eval,
            triggers=self.all_triggers,
            colour=self.colour,
            marker=self.marker,
            marks=self.trigger_marks(),
            badges=dict(self.badges or {}),
            accept_badge=self.accept_badge,
            params=self.param_info(),
            params_schema=components[self.params.__name__],
        )

    def typed(self, values: Mapping[str, Any]) -> P:
        """The params Struct from an object; bounds checked. Raises ``PolicyError``."""
        try:
            return msgspec.convert(_integral(values, self.params), type=self.params)
        except msgspec.ValidationError as exc:
            raise PolicyError(f"policy {self.name!r}: {exc}") from None


def _check(policy: Policy[Any]) -> None:
    cfg = getattr(policy.params, "__struct_config__", None)
    if cfg is None or not cfg.frozen or not cfg.forbid_unknown_fields:
        raise TypeError(f"policy {policy.name}: params must be a frozen Struct forbidding unknown fields")
    try:
        policy.params()
    except TypeError as exc:
        raise TypeError(f"policy {policy.name}: every parameter needs a default ({exc})") from None
    clash = _COMMON & set(policy.params.__struct_fields__)
    if clash:
        raise TypeError(f"policy {policy.name}: {sorted(clash)} are common session parameters")
    if policy.primes and "priming_steps" not in policy.params.__struct_fields__:
        raise TypeError(f"policy {policy.name} primes but has no priming_steps parameter")
    if policy.uses_srm and policy.on_step is None:
        raise TypeError(f"policy {policy.name} uses the SRM but has no on_step")
    if policy.needs != "nothing" and policy.on_judged is None:
        raise TypeError(f"policy {policy.name} needs an LRM {policy.needs} call but has no on_judged")
    if not policy.uses_lrm and (policy.primes or policy.needs != "nothing" or not policy.uses_srm):
        raise TypeError(f"policy {policy.name} never calls the LRM, yet primes, judges or has no SRM")


@functools.cache
def _integer_fields(kind: type[msgspec.Struct]) -> frozenset[str]:
    (_,), components = msgspec.json.schema_components([kind])
    props: dict[str, Any] = components[kind.__name__].get("properties", {})
    return frozenset(k for k, v in props.items() if v.get("type") == "integer")


def _integral(values: Mapping[str, Any], kind: type[msgspec.Struct]) -> dict[str, Any]:
    """JSON has one number type: 3.0 is the integer 3 (as JSON Schema reads it)."""
    ints = _integer_fields(kind)
    return {
        k: int(v) if k in ints and isinstance(v, float) and v.is_integer() else v for k, v in values.items()
    }


def _as_json(typed: msgspec.Struct) -> dict[str, Any]:
    # Exactly what decoding the wire gives (lists, not tuples), so a stored request compares equal.
    out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(typed))
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class PolicyRegistry:
    """An immutable set of policies by name. Build it with ``builtin()``, ``load()`` or ``from_env()``."""

    def __init__(self, policies: Iterable[Policy[Any]]) -> None:
        by_name: dict[str, Policy[Any]] = {}
        for p in policies:
            if p.name in by_name:
                raise ValueError(f"two policies named {p.name!r}")
            by_name[p.name] = p
        self._by_name = by_name
        self._param_names = frozenset(f for p in by_name.values() for f in p.params.__struct_fields__)

    @classmethod
    def builtin(cls) -> PolicyRegistry:
        from ._builtin import BUILTIN

        return cls(BUILTIN)

    @classmethod
    def load(cls, modules: Sequence[str]) -> PolicyRegistry:
        """The built-in policies plus those of ``modules`` (import paths defining ``POLICY``/``POLICIES``)."""
        from ._builtin import BUILTIN

        extra: list[Policy[Any]] = []
        for name in modules:
            mod = importlib.import_module(name)
            found = getattr(mod, "POLICIES", None) or ((mod.POLICY,) if hasattr(mod, "POLICY") else ())
            if not found:
                raise ValueError(f"policy module {name} defines neither POLICY nor POLICIES")
            extra.extend(found)
        return cls((*BUILTIN, *extra))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PolicyRegistry:
        raw = (os.environ if env is None else env).get(POLICY_MODULES_ENV, "")
        return cls.load([m.strip() for m in raw.split(",") if m.strip()])

    def __iter__(self) -> Iterator[Policy[Any]]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def get(self, name: str) -> Policy[Any]:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self._by_name)
            raise PolicyError(
                f"unknown policy {name!r}{did_you_mean(name, self._by_name)}; known: {known}",
                code="unknown_policy",
            ) from None

    def param_names(self) -> frozenset[str]:
        """Every parameter name some registered policy takes."""
        return self._param_names

    # -- session parameters ----------------------------------------------------------------------------

    def resolve(self, params: SessionParams) -> tuple[Policy[Any], Any]:
        """The session's policy and its typed parameters: defaults, then ``policy_params``, then any v1
        flat knob the policy takes (set only by v1 payloads, or by a caller overriding one).

        A key of ``policy_params`` that another registered policy takes is ignored, as a flat v1 knob
        is: one parameter set may serve several policies (eval runs it under each); a key no policy
        takes is an error."""
        policy = self.get(params.policy)
        own = policy.params.__struct_fields__
        values = {k: v for k, v in params.policy_params.items() if k in own or k not in self._param_names}
        for name in V1_FLAT_PARAMS:
            value = getattr(params, name)
            if value is not msgspec.UNSET and name in policy.params.__struct_fields__:
                values[name] = value
        return policy, policy.typed(values)

    def normalise(self, params: SessionParams) -> SessionParams:
        """The canonical form: ``policy_params`` complete and checked, no v1 flat knobs."""
        _, typed = self.resolve(params)
        unset = dict.fromkeys(V1_FLAT_PARAMS, msgspec.UNSET)
        return msgspec.structs.replace(params, policy_params=_as_json(typed), **unset)

    def session_params(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        policy: str | None = None,
        base: SessionParams | None = None,
        keep_others: bool = False,
    ) -> SessionParams:
        """Canonical ``SessionParams`` from a flat object (the HTTP ``params``, CLI flags, a benchmark).

        Keys are common parameters, the policy's own, or ``policy_params`` (an object of the policy's
        own). A key that belongs to another registered policy (flat or in ``policy_params``) is checked
        against that policy's bounds and then ignored, as in v1 (one parameter set may be sent to several
        policies); any other key is refused with a suggestion. With ``keep_others`` the result is a
        parameter set for several policies (eval's): ``policy_params`` holds the values given, this
        policy's and the others', and no defaults. A JSON number with no fraction is an integer. Raises
        ``PolicyError``.
        """
        values = dict(values or {})
        given_base = base is not None
        base = base or SessionParams()
        given = values.pop("policy", None)
        if given is not None and not isinstance(given, str):
            raise PolicyError("policy must be a string")
        name = policy or given or base.policy
        chosen = self.get(name)
        own = set(chosen.params.__struct_fields__)
        nested = values.pop("policy_params", {})
        if not isinstance(nested, Mapping):
            raise PolicyError("policy_params must be an object")
        common = {k: v for k, v in msgspec.to_builtins(base).items() if k in _COMMON}
        others: dict[str, Any] = {}  # other policies' parameters (kept with keep_others)
        mine: dict[str, Any] = (
            msgspec.to_builtins(self.resolve(base)[1]) if given_base and base.policy == name else {}
        )
        for key, value in values.items():
            if key in _COMMON:
                common[key] = value
            elif key in own:
                mine[key] = value
                if key in nested:
                    chosen.typed({key: value})  # overridden by policy_params: checked all the same
            else:
                owner = next((p for p in self if key in p.params.__struct_fields__), None)
                if owner is None:
                    known = sorted(_COMMON | self.param_names())
                    raise PolicyError(f"unknown parameter {key!r}{did_you_mean(key, known)}")
                others[key] = _as_json(owner.typed({key: value}))[key]  # checked; not this policy's
        for key, value in nested.items():
            if key in own:
                mine[key] = value
                continue
            owner = next((p for p in self if key in p.params.__struct_fields__), None)
            if owner is None:
                raise PolicyError(
                    f"policy {name!r} takes no parameter {key!r}{did_you_mean(key, own)}"
                    f"; it takes: {', '.join(sorted(own)) or 'none'}"
                )
            others[key] = _as_json(owner.typed({key: value}))[key]  # as a flat key: another policy's
        try:
            merged = msgspec.convert({**_integral(common, SessionParams), "policy": name}, type=SessionParams)
        except msgspec.ValidationError as exc:
            raise PolicyError(str(exc)) from None
        typed = chosen.typed(mine)
        complete = _as_json(typed)
        # A parameter set for several policies holds what was given, not this policy's defaults: each
        # policy fills in its own (two policies may default a shared name differently).
        kept = {**others, **{k: complete[k] for k in mine}} if keep_others else complete
        return msgspec.structs.replace(merged, policy_params=kept)

    def flat(self, params: SessionParams) -> dict[str, Any]:
        """Common parameters and the policy's own in one flat object (CLI JSON, eval rows, the browser)."""
        _, typed = self.resolve(params)
        common = {k: v for k, v in msgspec.to_builtins(params).items() if k in _COMMON}
        return {**common, **msgspec.to_builtins(typed)}
