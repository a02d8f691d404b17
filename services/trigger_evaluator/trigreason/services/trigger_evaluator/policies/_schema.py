"""The JSON Schema of the policies' parameters: the tagged union ``policy`` + ``policy_params`` that proto
carries as an open object, spelled out for the registered policies (``make schemas``; a test fails on
drift)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from ._registry import PolicyRegistry

__all__ = ["POLICY_SCHEMA", "render_policy_schema"]

POLICY_SCHEMA = Path(__file__).parent / "schema" / "policy-params.v1.schema.json"


def render_policy_schema(policies: PolicyRegistry) -> str:
    """One branch per policy: its name as ``policy`` and its parameter Struct as ``policy_params``."""
    kinds = [p.params for p in policies]
    refs, components = msgspec.json.schema_components(kinds, ref_template="#/$defs/{name}")
    branches: list[dict[str, Any]] = [
        {
            "title": p.name,
            "description": p.summary,
            "type": "object",
            "properties": {"policy": {"const": p.name}, "policy_params": ref},
            "required": ["policy"],
        }
        for p, ref in zip(policies, refs, strict=True)
    ]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": POLICY_SCHEMA.name,
        "title": "SessionParams policy and policy_params",
        "oneOf": branches,
        "$defs": components,
    }
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
