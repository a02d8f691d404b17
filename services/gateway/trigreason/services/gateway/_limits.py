"""What the inference servers accept, checked before a session starts: the workers publish their server's
limits (TGI's ``/info``) on the bus (``BackendLimits``), and a request beyond them is a 422 naming the
parameter and the limit, instead of a session that fails at its first step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from trigreason.proto import BackendLimits, Role, SessionParams
from trigreason.services.trigger_evaluator.policies import JudgeRequest, Policy, PolicyRegistry, SrmStep

from ._http import HttpError

__all__ = ["check_limits", "roles_of"]


def roles_of(policy: Policy[Any]) -> tuple[Role, ...]:
    """The roles whose servers a session under ``policy`` calls (as the registry declares it)."""
    roles: list[Role] = []
    if policy.uses_srm:
        roles.append("srm")
    if policy.uses_lrm:
        roles.append("lrm")
    return tuple(roles)


def _judge_top_n(policy: Policy[Any], own: Any) -> tuple[str, int] | None:
    """The top_n of the judge call the policy would make, and the parameter that sets it."""
    if policy.needs != "judge" or policy.on_step is None:
        return None
    asked = policy.on_step(SrmStep(text=""), own)  # what the policy asks of the LRM for a step
    if not isinstance(asked, JudgeRequest):
        return None
    values = msgspec.to_builtins(own)
    name = next((k for k, v in values.items() if "top_n" in k and v == asked.top_n), "top_n")
    return name, asked.top_n


def _beyond(where: str, name: str, value: int, role: Role, limits: BackendLimits, what: str) -> HttpError:
    server = f" ({limits.backend})" if limits.backend else ""
    return HttpError(
        422,
        "beyond_backend_limit",
        f"{where}.{name}: {value} is beyond what the {role.upper()} inference server{server} accepts: {what}",
    )


def check_limits(
    params: SessionParams,
    limits: Mapping[Role, BackendLimits],
    where: str = "params",
    policies: PolicyRegistry | None = None,
) -> None:
    """422 ``beyond_backend_limit`` for the first parameter a server of the session would refuse."""
    policy, own = (policies or PolicyRegistry.builtin()).resolve(params)
    judge = _judge_top_n(policy, own)
    for role in roles_of(policy):
        lim = limits.get(role)
        if lim is None:
            continue
        total = lim.max_total_tokens
        if total is not None and params.step_max_tokens >= total:
            raise _beyond(
                where,
                "step_max_tokens",
                params.step_max_tokens,
                role,
                lim,
                f"max_total_tokens {total} (prompt and new tokens together), so at most {total - 1}",
            )
        top_n = lim.max_top_n_tokens
        if role == "lrm" and judge is not None and top_n is not None and judge[1] > top_n:
            raise _beyond(where, judge[0], judge[1], role, lim, f"max_top_n_tokens {top_n}")
