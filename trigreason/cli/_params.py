"""Session parameters from the command line: defaults, then a ``--profile``, then the flags given."""

from __future__ import annotations

import os
from typing import Any

import msgspec
import typer

from trigreason.profiles import load_profile
from trigreason.proto import ConfigError, SessionParams

__all__ = ["session_params"]

_EXPLICIT = ("COMMANDLINE", "ENVIRONMENT")  # parameter sources that mean the user set the flag


def session_params(ctx: typer.Context, profile: str | None, flags: dict[str, Any]) -> SessionParams:
    """A profile's values win over flag defaults; flags typed on the command line win over the profile."""
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
        if name == "hesitation" and isinstance(value, str):
            value = [w.strip() for w in value.split(",") if w.strip()]
        raw[name] = value
    try:
        return msgspec.convert(raw, SessionParams)
    except msgspec.ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
