"""The Grafana dashboards: JSON valid for the schema version each declares (tests/monitoring/schemas),
a datasource, namespace and site variable on each, every query through the chosen datasource and filtered
by site and namespace, panels on the grid without overlap, and every panel documented."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.monitoring.support import OPERATIONS, dashboards, panel_queries, panels

SCHEMAS = Path(__file__).parent / "schemas"
BOARDS = dashboards()
EXPECTED = {
    "trigreason-overview.json",
    "trigreason-bus.json",
    "trigreason-backends.json",
    "trigreason-gateway.json",
}


def test_the_four_dashboards_exist() -> None:
    assert set(BOARDS) == EXPECTED


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_valid_for_the_schema_version_it_declares(name: str) -> None:
    board = BOARDS[name]
    version = board["schemaVersion"]
    schema_file = SCHEMAS / f"grafana-dashboard-v{version}.schema.json"
    assert schema_file.exists(), f"{name} declares schemaVersion {version}: no schema for it in {SCHEMAS}"
    schema = json.loads(schema_file.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(board), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_the_schema_rejects_what_grafana_rejects() -> None:
    """The schema has teeth: a panel off the grid, a bad variable type and a missing field config fail."""
    schema = json.loads((SCHEMAS / "grafana-dashboard-v39.schema.json").read_text())
    board: dict[str, Any] = json.loads(json.dumps(BOARDS["trigreason-overview.json"]))
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(board)
    wide = json.loads(json.dumps(board))
    panels(wide)[0]["gridPos"]["w"] = 25
    assert not validator.is_valid(wide)
    bad_var = json.loads(json.dumps(board))
    bad_var["templating"]["list"][0]["type"] = "dropdown"
    assert not validator.is_valid(bad_var)
    no_config = json.loads(json.dumps(board))
    del panels(no_config)[0]["fieldConfig"]
    assert not validator.is_valid(no_config)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_variables_and_datasource(name: str) -> None:
    board = BOARDS[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in ("namespace", "site"):
        assert variables[var]["type"] == "query"
        assert variables[var]["includeAll"] is True
        assert variables[var]["allValue"] == ".*"
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_every_query_filters_by_site_and_namespace() -> None:
    selector = re.compile(r"\{[^}]*\}")
    for board, panel, expr in panel_queries():
        for match in selector.findall(expr):
            assert 'site=~"$site"' in match, f"{board} / {panel}: {match}"
            assert 'namespace=~"$namespace"' in match, f"{board} / {panel}: {match}"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panels_do_not_overlap(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    ids: set[int] = set()
    for panel in BOARDS[name]["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        pos = panel["gridPos"]
        cells = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{name}: {panel['title']} overlaps another panel"
        taken |= cells


def test_unique_uids_and_every_panel_documented() -> None:
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(set(uids)) == len(uids)
    doc = OPERATIONS.read_text()
    for board in BOARDS.values():
        assert f"### {board['title']}" in doc, f"docs/operations.md has no section for {board['title']}"
        for panel in panels(board):
            assert f"| {panel['title']} |" in doc, (
                f"docs/operations.md does not describe {board['title']} / {panel['title']}"
            )
