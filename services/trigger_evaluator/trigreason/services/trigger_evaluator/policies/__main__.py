"""``python -m trigreason.services.trigger_evaluator.policies``: write the built-in policies' JSON Schema."""

from ._registry import PolicyRegistry
from ._schema import POLICY_SCHEMA, render_policy_schema

POLICY_SCHEMA.parent.mkdir(exist_ok=True)
POLICY_SCHEMA.write_text(render_policy_schema(PolicyRegistry.builtin()), encoding="utf-8")
print(f"wrote {POLICY_SCHEMA}")
