"""One typed way to read a settings object from the environment, for every service.

A settings class is a dataclass or a msgspec ``Struct`` whose fields have defaults. Field ``foo_s`` is read
from ``<PREFIX>FOO_S`` (or the name given in ``names``), converted to the field's type by msgspec (numbers,
booleans, literals, optional values; a tuple from a comma-separated list), and the environment is passed in,
never read from globals. An unset or empty variable keeps the default; a bad value is a ``ConfigError``
that names the variable. Keyword overrides (command-line flags) win over the environment.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import msgspec

from trigreason.proto import ConfigError

__all__ = ["env_settings", "env_variable"]

T = TypeVar("T")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_variable(field: str, prefix: str, names: Mapping[str, str] | None = None) -> str:
    """The environment variable that sets ``field``."""
    return (names or {}).get(field, prefix + field.upper())


def _fields(cls: type[Any]) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    if issubclass(cls, msgspec.Struct):
        return [f.name for f in msgspec.structs.fields(cls)]
    raise TypeError(f"{cls.__name__} is neither a dataclass nor a msgspec Struct")


def _is_sequence(tp: Any) -> bool:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(arg) for arg in get_args(tp) if arg is not type(None))
    return origin in (tuple, list, frozenset, set)


def env_settings(
    cls: type[T],
    env: Mapping[str, str],
    *,
    prefix: str,
    names: Mapping[str, str] | None = None,
    parsers: Mapping[str, Callable[[str], Any]] | None = None,
    skip: frozenset[str] = frozenset(),
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """``cls`` from ``env``, then ``overrides`` (a None override, a flag not given, keeps the environment's
    value). ``parsers`` read fields whose text form is their own (``normal:40,10``); fields in ``skip`` are
    not read from the environment at all."""
    hints = get_type_hints(cls)
    known = _fields(cls)
    values: dict[str, Any] = {}
    for field in known:
        if field in skip:
            continue
        variable = env_variable(field, prefix, names)
        raw = env.get(variable)
        if raw is None or raw.strip() == "":
            continue
        values[field] = _convert(raw, hints[field], variable, (parsers or {}).get(field))
    chosen = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(chosen) - set(known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} settings: {', '.join(sorted(unknown))}")
    for field, value in chosen.items():
        parser = (parsers or {}).get(field)
        values[field] = _convert(value, hints[field], field, parser) if isinstance(value, str) else value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


def _convert(raw: str, tp: Any, name: str, parser: Callable[[str], Any] | None) -> Any:
    try:
        if parser is not None:
            return parser(raw)
        if tp is bool or tp == (bool | None):
            word = raw.strip().lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise ValueError("use true or false")
        value: Any = [part.strip() for part in raw.split(",") if part.strip()] if _is_sequence(tp) else raw
        return msgspec.convert(value, tp, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from exc
