"""Calibration picks the known best point on a small synthetic grid; profiles load and validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trigreason.cli import session_params
from trigreason.eval import GridPoint, choose, grid
from trigreason.profiles import load_profile
from trigreason.proto import ConfigError


def _p(rho: float, acc: float, ratio: float) -> GridPoint:
    return GridPoint(params={"rho": rho}, accuracy=acc, srm_token_ratio=ratio)


# Accuracy falls as rho rises (fewer offloads), the SRM share rises.
GRID = [_p(0.5, 0.80, 0.30), _p(0.7, 0.76, 0.55), _p(0.85, 0.70, 0.70), _p(0.95, 0.50, 0.90)]


@pytest.mark.parametrize(
    ("min_fraction", "want_rho", "feasible"),
    [
        (0.9, 0.7, True),  # floor 0.72: 0.7 is the last point above it, with the most SRM tokens
        (0.85, 0.85, True),  # floor 0.68
        (0.5, 0.95, True),  # floor 0.40: everything qualifies, the most SRM tokens wins
        (1.0, 0.5, True),  # floor 0.80: only rho 0.5 meets it (0.80 >= 0.80)
        (1.1, 0.5, False),  # floor 0.88: nothing qualifies, so the most accurate point
    ],
)
def test_choose_picks_the_known_best_point(min_fraction: float, want_rho: float, feasible: bool) -> None:
    best, ok = choose(GRID, lrm_accuracy=0.8, min_fraction=min_fraction)
    assert best.params["rho"] == want_rho
    assert ok is feasible


def test_ties_on_ratio_go_to_the_more_accurate_point() -> None:
    best, _ = choose([_p(0.1, 0.6, 0.5), _p(0.2, 0.7, 0.5)], lrm_accuracy=0.7, min_fraction=0.5)
    assert best.params["rho"] == 0.2


def test_grid_is_every_combination_in_order() -> None:
    assert grid({"rho": [0.5, 0.9], "k": [1, 2]}) == [
        {"rho": 0.5, "k": 1}, {"rho": 0.5, "k": 2}, {"rho": 0.9, "k": 1}, {"rho": 0.9, "k": 2},
    ]  # fmt: skip


def test_profiles_load_by_path_and_by_name(tmp_path: Path) -> None:
    (tmp_path / "mine.json").write_text(
        json.dumps({"name": "mine", "params": {"rho": 0.7, "priming_steps": 2}})
    )
    assert load_profile(str(tmp_path / "mine.json"), env={}) == {"rho": 0.7, "priming_steps": 2}
    assert load_profile("mine", env={"TRIGREASON_PROFILE_DIR": str(tmp_path)})["rho"] == 0.7
    with pytest.raises(ConfigError, match="no profile named 'other'"):
        load_profile("other", env={"TRIGREASON_PROFILE_DIR": str(tmp_path)})
    (tmp_path / "bad.json").write_text(json.dumps({"params": {"rho": 2.0}}))
    with pytest.raises(ConfigError, match="rho"):
        load_profile(str(tmp_path / "bad.json"), env={})
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ConfigError, match=r"junk\.json"):
        load_profile(str(tmp_path / "junk.json"), env={})


def test_flags_typed_on_the_command_line_win_over_the_profile(tmp_path: Path) -> None:
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({"params": {"rho": 0.7, "tau": 1.2}}))
    app = typer.Typer()
    seen: list[tuple[float, float, int]] = []

    @app.command()
    def cmd(ctx: typer.Context, rho: float = 0.85, tau: float = 1.05, k: int = 2) -> None:
        p = session_params(ctx, str(profile), {"rho": rho, "tau": tau, "k": k})
        seen.append((p.rho, p.tau, p.k))

    assert CliRunner().invoke(app, ["--tau", "1.5", "--k", "3"]).exit_code == 0
    assert seen == [(0.7, 1.5, 3)]  # rho from the profile, tau and k from the command line
