"""What the inference servers accept, checked before a session starts: the workers publish their server's
limits (TGI's ``/info``) on the bus (``BackendLimits``), and a request beyond them is a 422 naming the
parameter and the limit, instead of a session that fails at its first step."""

from __future__ import annotations

from collections.abc import Mapping

from trigreason.proto import BackendLimits, Role, SessionParams

from ._http import HttpError

__all__ = ["check_limits", "roles_of"]


def roles_of(params: SessionParams) -> tuple[Role, ...]:
    """The roles whose servers a session under ``params`` calls."""
    if params.policy == "srm-only":
        return ("srm",)
    if params.policy == "lrm-only":
        return ("lrm",)
    return ("srm", "lrm")


def _beyond(where: str, name: str, value: int, role: Role, limits: BackendLimits, what: str) -> HttpError:
    server = f" ({limits.backend})" if limits.backend else ""
    return HttpError(
        422,
        "beyond_backend_limit",
        f"{where}.{name}: {value} is beyond what the {role.upper()} inference server{server} accepts: {what}",
    )


def check_limits(params: SessionParams, limits: Mapping[Role, BackendLimits], where: str = "params") -> None:
    """422 ``beyond_backend_limit`` for the first parameter a server of the session would refuse."""
    for role in roles_of(params):
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
        if (
            role == "lrm"
            and params.policy == "specreason"
            and top_n is not None
            and params.judge_top_n > top_n
        ):
            raise _beyond(where, "judge_top_n", params.judge_top_n, role, lim, f"max_top_n_tokens {top_n}")
