"""JSON Schema of the contract for non-Python consumers, generated from the Structs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from ._v1 import Message, SessionParams, SessionSnapshot

__all__ = ["SCHEMA_DIR", "render_schemas"]

SCHEMA_DIR = Path(__file__).parent / "schema"


def render_schemas() -> dict[str, str]:
    """File name -> JSON text. ``python -m trigreason.proto`` writes them; a test checks for drift."""
    targets: dict[str, Any] = {
        "messages.v1.schema.json": Message,
        "session-params.v1.schema.json": SessionParams,
        "session-snapshot.v1.schema.json": SessionSnapshot,
    }
    out: dict[str, str] = {}
    for name, kind in targets.items():
        schema = msgspec.json.schema(kind)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": name, **schema}
        out[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out
