"""Session parameters on the command line: defaults, then a profile, then the flags the user typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trigreason.cli import app, graded, session_params


def _probe() -> typer.Typer:
    probe = typer.Typer()

    @probe.command()
    def show(
        ctx: typer.Context, profile: str | None = None, temperature: float = 0.0, top_p: float = 0.95
    ) -> None:
        params = session_params(ctx, profile, {"temperature": temperature, "top_p": top_p})
        print(json.dumps({"temperature": params.temperature, "top_p": params.top_p}))

    return probe


def _profile(tmp_path: Path) -> str:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"name": "p", "params": {"temperature": 0.6, "top_p": 0.8}}))
    return str(path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {"temperature": 0.0, "top_p": 0.95}),
        (["--top-p", "0.5"], {"temperature": 0.0, "top_p": 0.5}),
        (["--profile", "PROFILE"], {"temperature": 0.6, "top_p": 0.8}),  # the profile beats defaults
        (["--profile", "PROFILE", "--top-p", "0.9"], {"temperature": 0.6, "top_p": 0.9}),  # typed beats it
    ],
)
def test_precedence(tmp_path: Path, args: list[str], expected: dict[str, float]) -> None:
    args = [_profile(tmp_path) if a == "PROFILE" else a for a in args]
    result = CliRunner().invoke(_probe(), args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == expected


@pytest.mark.parametrize("command", [["solve"], ["eval"], ["calibrate"]])
def test_every_runner_takes_top_p(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--top-p" in result.output


@pytest.mark.parametrize("bad", ["0", "1.5"])
def test_an_out_of_range_top_p_is_a_usage_error(bad: str) -> None:
    result = CliRunner().invoke(app, ["solve", "What is 2 + 2?", "--top-p", bad])
    assert result.exit_code == 2
    assert "top_p" in result.output


def test_solve_grades_against_the_reference_as_eval_grades() -> None:
    assert graded("540", "540") == {"expected": "540", "correct": True}
    assert graded("180", "540")["correct"] is False
    assert graded("1,000", "1000")["correct"] is True  # numbers as numbers
    assert graded("\\frac{1}{2}", "0.5")["correct"] is True
    assert graded(None, "540")["correct"] is False


def test_calibrate_offers_the_policy_and_grid_axes() -> None:
    result = CliRunner().invoke(app, ["calibrate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--grid" in result.output
    assert "--policy" in result.output
    assert "--rho" in result.output  # TrigReason's shorthands stay


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "rhoo=0.5"], "did you mean 'rho'"),
        (["--grid", "rho=0.5,1.5"], "rho=1.5 is above its maximum 1"),
        (["--rho", "0.5", "--grid", "rho=0.7"], "'rho' given twice"),
        (["--grid", "rho"], "expected NAME=V1,V2"),
        (
            ["--policy", "specreason", "--grid", "judge_threshold=10"],
            "judge_threshold=10 is above its maximum 9",
        ),
        (["--policy", "specreason", "--rho", "0.5"], "numeric parameters: judge_threshold, judge_top_n"),
        (["--policy", "specreason"], "give --grid NAME=V1,V2"),
    ],
)
def test_calibrate_grid_axes_are_checked_before_anything_runs(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["calibrate", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())  # rich wraps the usage error's box
