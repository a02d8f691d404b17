"""The alert and recording rules: valid for Prometheus (``promtool check rules``), every alert unit-tested
(``promtool test rules``: fires on the series that should fire it, silent on healthy ones) and documented
in docs/operations.md with a runbook."""

from __future__ import annotations

import subprocess

import yaml

from tests.monitoring.support import OPERATIONS, RULES, RULES_TEST, alerts, binary


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {sum(1 for _ in _rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = subprocess.run(
        [binary("promtool"), "test", "rules", RULES_TEST.name],
        cwd=RULES_TEST.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            if check.get("exp_alerts"):
                fires.add(check["alertname"])
                # the healthy series of the same case must stay out of exp_alerts: their sites differ
                sites = {a["exp_labels"]["site"] for a in check["exp_alerts"]}
                inputs = {s["series"].split('site="')[1].split('"')[0] for s in case["input_series"]}
                assert inputs - sites, f"{case['name']}: no healthy series beside the firing ones"
            else:
                silent.add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fires == set(), f"alerts never seen firing in {RULES_TEST.name}"
    assert names <= fires | silent


def test_every_alert_has_a_summary_and_a_runbook() -> None:
    doc = OPERATIONS.read_text()
    for alert in alerts():
        name = alert["alert"]
        assert alert["annotations"]["summary"], name
        assert alert["annotations"]["runbook_url"] == f"docs/operations.md#{name.lower()}"
        section = doc.split(f"### {name}\n", 1)
        assert len(section) == 2, f"docs/operations.md has no '### {name}' section"
        body = section[1].split("\n### ", 1)[0]
        for part in ("Meaning", "First look", "Action"):
            assert f"**{part}.**" in body, f"{name}'s runbook has no {part}"


def _rules() -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
