"""``trigreason policies``: the registered trigger policies with their parameters, defaults and bounds."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._app import app
from ._policy_flags import cli_policies

__all__: list[str] = []

_BOUNDS = (
    ("minimum", ">="),
    ("exclusiveMinimum", ">"),
    ("maximum", "<="),
    ("exclusiveMaximum", "<"),
    ("minLength", "length >="),
    ("maxLength", "length <="),
    ("minItems", "items >="),
    ("maxItems", "items <="),
)


def _bounds(schema: dict[str, Any]) -> str:
    parts = [f"{sign} {schema[key]}" for key, sign in _BOUNDS if key in schema]
    if "enum" in schema:
        parts.append(" | ".join(map(str, schema["enum"])))
    inner = _bounds(schema["items"]) if isinstance(schema.get("items"), dict) else ""
    if inner:
        parts.append(f"each {inner}")
    return ", ".join(parts)


def _kind(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "choice"
    kind = schema.get("type", "any")
    return f"list of {schema.get('items', {}).get('type', 'any')}" if kind == "array" else str(kind)


@app.command("policies")
def policies_command(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """List the trigger policies (built in, and from TRIGREASON_POLICY_MODULES) with their parameters,
    defaults and bounds."""
    infos = [p.info() for p in cli_policies()]
    if as_json:
        sys.stdout.write(msgspec.json.encode({"policies": infos}).decode() + "\n")
        return
    console = Console()
    for info in infos:
        needs = {
            "nothing": "",
            "judge": ", an LRM judge call per SRM step",
            "score": ", an LRM scoring call per SRM step",
        }.get(info.needs, f", {info.needs}")
        console.print(f"[bold]{info.name}[/]  {escape(info.summary)}{needs}")
        console.print(f"  {escape(info.description)}", style="dim")
        if not info.params:
            console.print("  (no parameters)\n")
            continue
        table = Table(box=None, padding=(0, 2), show_edge=False)
        for col in ("parameter", "type", "default", "bounds", ""):
            table.add_column(col)
        for p in info.params:
            default = ",".join(map(str, p.default)) if isinstance(p.default, list) else str(p.default)
            table.add_row(p.name, _kind(p.schema), escape(default), _bounds(p.schema), escape(p.help))
        console.print(table)
        console.print()
