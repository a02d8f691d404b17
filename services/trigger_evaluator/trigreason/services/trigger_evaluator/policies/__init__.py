"""Trigger policies as plug-ins, and the registry every other part of the system reads.

A policy is one module that builds a ``Policy`` (see ``_registry``). The built-in ones are TrigReason,
SpecReason, LRM-only, SRM-only, the random baseline and likelihood; more are loaded from the modules named in
``TRIGREASON_POLICY_MODULES`` (``PolicyRegistry.from_env``). Pure: stdlib, msgspec and proto only.
"""

from ._endpoints import LrmOnlyParams, SrmOnlyParams
from ._likelihood import LikelihoodParams, Statistic, likelihood_replaces, likelihood_statistic
from ._random import RandomParams, random_offload
from ._registry import (
    POLICY_MODULES_ENV,
    JudgeRequest,
    Needs,
    ParamInfo,
    Policy,
    PolicyError,
    PolicyInfo,
    PolicyRegistry,
    ScoreRequest,
    SrmStep,
    StepVerdict,
    did_you_mean,
)
from ._schema import POLICY_SCHEMA, render_policy_schema
from ._signals import Hesitation, TriggerDecision, confident_share, hesitates
from ._specreason import SpecReasonParams, judge_score
from ._trigreason import TrigReasonParams, decide_trigreason

__all__ = [
    "POLICY_MODULES_ENV",
    "POLICY_SCHEMA",
    "Hesitation",
    "JudgeRequest",
    "LikelihoodParams",
    "LrmOnlyParams",
    "Needs",
    "ParamInfo",
    "Policy",
    "PolicyError",
    "PolicyInfo",
    "PolicyRegistry",
    "RandomParams",
    "ScoreRequest",
    "SpecReasonParams",
    "SrmOnlyParams",
    "SrmStep",
    "Statistic",
    "StepVerdict",
    "TrigReasonParams",
    "TriggerDecision",
    "confident_share",
    "decide_trigreason",
    "did_you_mean",
    "hesitates",
    "judge_score",
    "likelihood_replaces",
    "likelihood_statistic",
    "random_offload",
    "render_policy_schema",
]
