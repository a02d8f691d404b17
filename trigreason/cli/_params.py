"""Session parameters from the command line: defaults, then a ``--profile``, then the flags given."""

from __future__ import annotations

import os
from typing import Any

import typer

from trigreason.profiles import load_profile
from trigreason.proto import ConfigError, SessionParams
from trigreason.services.trigger_evaluator.policies import PolicyError

from ._policy_flags import cli_policies, policy_flag_values

__all__ = ["session_params"]

_EXPLICIT = ("COMMANDLINE", "ENVIRONMENT")  # parameter sources that mean the user set the flag


def session_params(ctx: typer.Context, profile: str | None, flags: dict[str, Any]) -> SessionParams:
    """A profile's values win over flag defaults; flags typed on the command line win over the profile.
    Checked by the policy registry (a usage error names the parameter)."""
    raw: dict[str, Any] = {}
    if profile:
        try:
            raw.update(load_profile(profile, env=os.environ))
        except ConfigError as exc:
            raise typer.BadParameter(exc.message, param_hint="--profile") from exc
    for name, value in flags.items():
        source = ctx.get_parameter_source(name)
        if value is None or (name in raw and (source is None or source.name not in _EXPLICIT)):
            continue
        raw[name] = value
    # The policy parameters' flags (with_policy_flags) default to None: given means typed (or from env).
    raw.update(policy_flag_values(ctx))
    try:
        # Other policies' parameters are kept: eval runs one parameter set under several policies.
        return cli_policies().session_params(raw, keep_others=True)
    except PolicyError as exc:
        raise typer.BadParameter(exc.message) from exc
