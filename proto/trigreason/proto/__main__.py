"""Regenerate the JSON Schemas: ``python -m trigreason.proto``."""

from ._schema import SCHEMA_DIR, render_schemas

SCHEMA_DIR.mkdir(exist_ok=True)
for _name, _text in render_schemas().items():
    (SCHEMA_DIR / _name).write_text(_text)
    print(f"wrote {SCHEMA_DIR / _name}")
