"""Command-line flags derived from the policy registry: ``--policy`` with the registered names as its
choices, and one flag per policy parameter (``--rho``, ``--judge-threshold``, a plug-in's own), so no
command names a policy or its parameters in code.

The registry is the built-in policies plus the modules in ``TRIGREASON_POLICY_MODULES``, read when the
CLI is imported (its commands and flags are built then)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import typer

from trigreason.services.trigger_evaluator.policies import Policy, PolicyRegistry

__all__ = ["cli_policies", "explicit", "policy_flag_values", "policy_option", "with_policy_flags"]

F = TypeVar("F", bound=Callable[..., Any])

# A parameter whose name clashes with one of the command's own options gets this prefix (--policy-seed).
_PREFIX = "policy_"
_PANEL = "Policy parameters"


@functools.cache
def cli_policies() -> PolicyRegistry:
    """The registry the CLI was built from (read once per process)."""
    return PolicyRegistry.from_env()


def _choice(names: list[str]) -> Any:
    return Literal.__getitem__(tuple(names))  # typer offers a Literal's values as the choices


def policy_option(*, only: Callable[[Policy[Any]], bool] = lambda p: True, help: str = "") -> Any:
    """``Annotated[..., typer.Option(...)]`` for ``--policy``, choosing among the registered policies."""
    names = [p.name for p in cli_policies() if only(p)]
    text = help or "the trigger policy (`trigreason policies` lists them)"
    return Annotated[_choice(names), typer.Option("--policy", help=text)]


def _flag_name(name: str, taken: set[str]) -> str:
    return name if name not in taken else _PREFIX + name


def _flag(name: str, owners: list[Policy[Any]]) -> tuple[Any, str]:
    """(Python type, help) for parameter ``name``: typed as the first owner's field, help from all."""
    info = {i.name: i for i in owners[0].param_info()}[name]
    schema = info.schema
    kind: Any = str
    choices: list[str] | None = None
    if schema.get("type") == "integer":
        kind = int
    elif schema.get("type") == "number":
        kind = float
    elif schema.get("type") == "boolean":
        kind = bool
    elif "enum" in schema:
        choices = [str(c) for c in schema["enum"]]
    default = info.default
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    who = ", ".join(p.name for p in owners)
    helps = {p.name: {i.name: i.help for i in p.param_info()}[name] for p in owners}
    text = next((h for h in helps.values() if h), name)
    extra = " (comma-separated)" if schema.get("type") == "array" else ""
    return (kind, choices), f"{who}: {text}{extra} (default {shown})"


def with_policy_flags(func: F) -> F:
    """Add one ``--NAME`` option per parameter of the registered policies to a typer command.

    The options default to ``None`` (not given: the policy's default, or a profile's value); the
    command reads them with ``policy_flag_values(ctx)``."""
    sig = inspect.signature(func, eval_str=True)  # real objects: the new function has other globals
    taken = set(sig.parameters)
    owners: dict[str, list[Policy[Any]]] = {}
    for policy in cli_policies():
        for name in policy.params.__struct_fields__:
            owners.setdefault(name, []).append(policy)
    extra: list[inspect.Parameter] = []
    for name, by in owners.items():
        (kind, choices), text = _flag(name, by)
        py_name = _flag_name(name, taken)
        option = typer.Option(
            f"--{py_name.replace('_', '-')}", help=text, show_default=False, rich_help_panel=_PANEL
        )
        annotation: Any = Annotated[(_choice(choices) if choices else kind) | None, option]
        extra.append(
            inspect.Parameter(py_name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        )
    names = {p.name for p in extra}

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        for name in names:
            kwargs.pop(name, None)  # read through the context (policy_flag_values)
        return func(*args, **kwargs)

    params = list(sig.parameters.values())
    command.__signature__ = sig.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
    command.__annotations__ = {
        **{p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty},
        **{p.name: p.annotation for p in extra},
    }
    del command.__wrapped__  # typer must see the new signature, not the wrapped one
    return command  # type: ignore[return-value]


def policy_flag_values(ctx: typer.Context) -> dict[str, Any]:
    """The policy-parameter flags given on the command line (not ``None``), by parameter name; a list
    parameter is given comma-separated."""
    fields = {f for p in cli_policies() for f in p.params.__struct_fields__}
    out: dict[str, Any] = {}
    for param in ctx.command.params:
        if getattr(param, "rich_help_panel", None) != _PANEL or param.name is None:
            continue
        value = ctx.params.get(param.name)
        if value is None:
            continue
        name = param.name if param.name in fields else param.name.removeprefix(_PREFIX)
        out[name] = _parse(name, value)
    return out


def explicit(ctx: typer.Context, name: str) -> bool:
    """Whether the user set policy parameter ``name`` (on the command line or from the environment)."""
    for param in ctx.command.params:
        if getattr(param, "rich_help_panel", None) == _PANEL and param.name in (name, _PREFIX + name):
            source = ctx.get_parameter_source(param.name)
            return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")
    return False


def _parse(name: str, value: Any) -> Any:
    for policy in cli_policies():
        info = {i.name: i for i in policy.param_info()}.get(name)
        if info is not None and info.schema.get("type") == "array" and isinstance(value, str):
            words = [w.strip() for w in value.split(",") if w.strip()]
            if not words:
                raise typer.BadParameter(f"give at least one value, e.g. --{name.replace('_', '-')} a,b")
            return words
    return value
