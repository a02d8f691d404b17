"""Calibration picks the known best point on a small synthetic grid; the Pareto front and the random
baseline by hand; ``trigreason calibrate`` end to end on scripted backends; profiles load and validate."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.scripted import ScriptedBackend
from tests.support import CONFIDENT, UNSURE, step
from trigreason.cli import app, session_params
from trigreason.eval import (
    GridPoint,
    InProcessExecutor,
    Outcome,
    beats_random,
    choose,
    grid,
    grid_axes,
    pareto_front,
    pareto_summary,
    plan_calibration,
    point_slug,
    random_accuracy_at,
)
from trigreason.profiles import load_profile
from trigreason.proto import ConfigError, SessionParams
from trigreason.services.trigger_evaluator.policies import PolicyRegistry


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
        own = p.policy_params  # TrigReason's own parameters (the default policy)
        seen.append((own["rho"], own["tau"], own["k"]))

    assert CliRunner().invoke(app, ["--tau", "1.5", "--k", "3"]).exit_code == 0
    assert seen == [(0.7, 1.5, 3)]  # rho from the profile, tau and k from the command line


def _pt(name: str, ratio: float, acc: float) -> GridPoint:
    return GridPoint(params={"name": name}, accuracy=acc, srm_token_ratio=ratio)


@pytest.mark.parametrize(
    ("points", "want"),
    [
        ([], []),
        ([("a", 0.5, 0.5)], ["a"]),
        # a trade-off: neither dominates; the front runs by ratio
        ([("b", 0.8, 0.4), ("a", 0.2, 0.9)], ["a", "b"]),
        # c is dominated by b (more SRM tokens and more accurate)
        ([("a", 0.2, 0.9), ("b", 0.6, 0.7), ("c", 0.5, 0.6)], ["a", "b"]),
        # the same ratio: the less accurate is dominated
        ([("a", 0.5, 0.7), ("b", 0.5, 0.6)], ["a"]),
        # the same accuracy: fewer SRM tokens is dominated
        ([("a", 0.3, 0.7), ("b", 0.6, 0.7)], ["b"]),
        # equal points: both on the front
        ([("a", 0.4, 0.7), ("b", 0.4, 0.7), ("c", 0.1, 0.9)], ["c", "a", "b"]),
        # one point better on both dominates all
        ([("a", 0.2, 0.5), ("b", 0.9, 0.9), ("c", 0.5, 0.8)], ["b"]),
    ],
)
def test_pareto_front(points: list[tuple[str, float, float]], want: list[str]) -> None:
    front = pareto_front([_pt(*p) for p in points])
    assert [p.params["name"] for p in front] == want


LRM = _pt("lrm-only", 0.0, 0.9)
SRM = _pt("srm-only", 1.0, 0.3)
# Measured random points, out of order: their ratios are not 1 - offload_p.
RANDOM = [_pt("p0.25", 0.6, 0.5), _pt("p0.75", 0.2, 0.8)]


@pytest.mark.parametrize(
    ("ratio", "want"),
    [
        (0.0, 0.9),  # LRM-only
        (0.1, 0.85),  # halfway between LRM-only and p0.75
        (0.2, 0.8),  # on a random point
        (0.4, 0.65),  # between the random points
        (0.8, 0.4),  # between p0.25 and SRM-only
        (1.0, 0.3),  # SRM-only
    ],
)
def test_random_accuracy_is_piecewise_linear_through_the_end_points(ratio: float, want: float) -> None:
    assert random_accuracy_at(ratio, RANDOM, lrm_only=LRM, srm_only=SRM) == pytest.approx(want)


def test_random_accuracy_without_random_points_joins_the_end_points() -> None:
    assert random_accuracy_at(0.25, [], lrm_only=LRM, srm_only=SRM) == pytest.approx(0.75)


def test_random_accuracy_at_a_repeated_ratio_is_the_mean_and_outside_the_range_the_nearest_end() -> None:
    lrm = _pt("lrm-only", 0.1, 0.9)  # priming: LRM-only need not sit at 0 in a custom setup
    pts = [_pt("x", 0.5, 0.6), _pt("y", 0.5, 0.4)]
    assert random_accuracy_at(0.5, pts, lrm_only=lrm, srm_only=SRM) == pytest.approx(0.5)
    assert random_accuracy_at(0.0, pts, lrm_only=lrm, srm_only=SRM) == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("ratio", "acc", "beats", "at"),
    [
        (0.4, 0.70, True, 0.65),  # above the line
        (0.4, 0.65, False, 0.65),  # on the line is not beating it
        (0.4, 0.60, False, 0.65),  # below
        (0.0, 0.95, True, 0.9),  # at LRM-only's ratio
        (1.0, 0.3, False, 0.3),
    ],
)
def test_beats_random(ratio: float, acc: float, beats: bool, at: float) -> None:
    v = beats_random(_pt("t", ratio, acc), RANDOM, lrm_only=LRM, srm_only=SRM)
    assert v.beats_random is beats
    assert v.random_accuracy_at_ratio == pytest.approx(at)
    assert v.margin == pytest.approx(acc - at)


def test_pareto_summary_marks_the_front_and_keeps_the_random_points_and_end_points() -> None:
    pts = [_pt("a", 0.2, 0.9), _pt("b", 0.6, 0.7), _pt("c", 0.5, 0.6)]
    s = pareto_summary(pts, RANDOM, lrm_only=LRM, srm_only=SRM)
    assert [g.on_front for g in s.grid] == [True, True, False]
    assert [f.params["name"] for f in s.front] == ["a", "b"]
    assert [r.params["name"] for r in s.random] == ["p0.75", "p0.25"]  # by ratio
    assert s.end_points["srm-only"].srm_token_ratio == 1.0
    a, b, c = s.grid
    assert a.beats_random
    assert a.random_accuracy_at_ratio == pytest.approx(0.8)
    assert b.margin_vs_random == pytest.approx(0.7 - 0.5)
    # dominated by b, yet above chance: 0.8 + (0.5 - 0.2) / (0.6 - 0.2) x (0.5 - 0.8) = 0.575 at ratio 0.5
    assert c.beats_random
    assert c.random_accuracy_at_ratio == pytest.approx(0.575)
    assert c.margin_vs_random == pytest.approx(0.025)


def _scripted_executor() -> Any:
    """SRM: two steps 3 of 4 tokens sure (r_s 0.75), then a wrong answer; LRM: a priming step, then the right
    answer. rho 0.9 accepts every SRM step (wrong); rho 0.5 offloads the first (r_s > rho) to the LRM
    (right)."""

    class Executor:
        async def solve(self, question: str, params: SessionParams, session_id: str) -> Outcome:
            mixed = [CONFIDENT, CONFIDENT, CONFIDENT, UNSURE]
            srm = ScriptedBackend(
                "srm",
                [step("3 + 4 is 8.", mixed), step("Yes.", mixed)],
                default=step("So \\boxed{8}.", mixed),
            )
            lrm = ScriptedBackend(
                "lrm", [step("Add the numbers.")], default=step("3 + 4 = 7, so \\boxed{7}.")
            )
            return await InProcessExecutor(srm, lrm).solve(question, params, session_id)

    @contextlib.asynccontextmanager
    async def executor(*_args: Any) -> AsyncIterator[Any]:
        yield Executor()

    return executor


def test_calibrate_writes_the_front_the_random_baseline_and_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("trigreason.cli._calibrate.executor", _scripted_executor())
    data = tmp_path / "cal.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is 3 + 4? ({i})", "answer": "7"}) + "\n" for i in range(2))
    )
    out, prof = tmp_path / "cal", tmp_path / "p.json"
    args = ["calibrate", "--dataset", str(data), "--limit", "2", "--rho", "0.5,0.9", "--priming-steps", "1",
            "--random-p", "0.25,0.5,0.75", "--min-accuracy", "0.9", "--out", str(out),
            "--profile-out", str(prof)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "lrm-only", "random-offload_p0.25", "random-offload_p0.5", "random-offload_p0.75",
        "rho0.5-priming_steps1", "rho0.9-priming_steps1", "srm-only",
    ]  # fmt: skip
    doc = json.loads(prof.read_text())
    assert json.loads((out / "calibration.json").read_text()) == doc
    c = doc["calibration"]
    assert (c["lrm_only_accuracy"], c["srm_only_accuracy"]) == (1.0, 0.0)
    assert c["end_points"]["lrm-only"]["srm_token_ratio"] == 0.0
    assert c["end_points"]["srm-only"]["srm_token_ratio"] == 1.0
    assert sorted(r["params"]["offload_p"] for r in c["random"]) == [0.25, 0.5, 0.75]
    assert [r["srm_token_ratio"] for r in c["random"]] == sorted(r["srm_token_ratio"] for r in c["random"])
    assert all(r["params"]["priming_steps"] == 1 for r in c["random"])
    by_rho = {g["params"]["rho"]: g for g in c["grid"]}
    assert by_rho[0.5]["accuracy"] == 1.0
    assert by_rho[0.9]["accuracy"] == 0.0
    assert by_rho[0.9]["srm_token_ratio"] > by_rho[0.5]["srm_token_ratio"]
    assert c["chosen"] == {"rho": 0.5, "priming_steps": 1}
    assert doc["params"]["rho"] == 0.5
    assert c["feasible"] is True
    chosen = by_rho[0.5]
    assert c["beats_random"] is chosen["beats_random"] is (chosen["margin_vs_random"] > 0)
    assert c["random_accuracy_at_ratio"] == chosen["random_accuracy_at_ratio"]
    assert {tuple(sorted(f["params"].items())) for f in c["front"]} <= {
        tuple(sorted(g["params"].items())) for g in c["grid"] if g["on_front"]
    }
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    assert "TrigReason calibration" in page
    assert "data:image/png;base64," in page
    assert "random" in page
    assert "srm-only" in page
    assert "front" in result.stdout
    assert "random baseline" in result.stdout
    assert "chosen" in result.stdout

    # --report-only rebuilds the same profile from the stored runs, without an executor.
    def no_executor(*_args: Any) -> Any:
        raise AssertionError("--report-only must run nothing")

    monkeypatch.setattr("trigreason.cli._calibrate.executor", no_executor)
    again = tmp_path / "again.json"
    result = CliRunner().invoke(app, [*args[:-1], str(again), "--report-only"])
    assert result.exit_code == 0, result.output
    assert json.loads(again.read_text()) == doc  # seconds too: the time the runs took, kept
    (out / "srm-only" / "results.jsonl").unlink()
    result = CliRunner().invoke(app, [*args[:-1], str(again), "--report-only"])
    assert result.exit_code == 2
    assert "srm-only" in result.output


def test_calibrate_draws_another_policys_calibration_beside_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """calibrate --beside: TrigReason's calibration.json beside a random-policy grid on the same problems,
    its points placed against the second run's random baseline; a mismatched run is refused."""
    monkeypatch.setattr("trigreason.cli._calibrate.executor", _scripted_executor())
    data = tmp_path / "cal.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is 3 + 4? ({i})", "answer": "7"}) + "\n" for i in range(2))
    )
    common = ["--dataset", str(data), "--limit", "2", "--priming-steps", "1", "--random-p", "0.5",
              "--temperature", "0"]  # fmt: skip
    first, profile = tmp_path / "tr", str(tmp_path / "a.json")
    result = CliRunner().invoke(
        app, ["calibrate", *common, "--rho", "0.5,0.9", "--out", str(first), "--profile-out", profile]
    )
    assert result.exit_code == 0, result.output
    theirs = json.loads((first / "calibration.json").read_text())["calibration"]

    second = tmp_path / "rnd"
    args = ["calibrate", *common, "--policy", "random", "--grid", "offload_p=0.25,0.75", "--out", str(second),
            "--profile-out", str(tmp_path / "b"), "--beside", str(first / "calibration.json")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    mine = json.loads((second / "calibration.json").read_text())["calibration"]
    assert mine["policy"] == "random"
    [beside] = mine["beside"]
    assert (beside["policy"], beside["source"]) == ("trigreason", str(first / "calibration.json"))
    assert [g["params"] for g in beside["grid"]] == [g["params"] for g in theirs["grid"]]
    assert [g["accuracy"] for g in beside["grid"]] == [g["accuracy"] for g in theirs["grid"]]
    ends = {k: GridPoint(**v) for k, v in mine["end_points"].items()}
    randoms = [GridPoint(**r) for r in mine["random"]]
    for g in beside["grid"]:
        at = random_accuracy_at(
            g["srm_token_ratio"], randoms, lrm_only=ends["lrm-only"], srm_only=ends["srm-only"]
        )
        assert g["random_accuracy_at_ratio"] == pytest.approx(at)  # against this run's baseline
        assert g["margin_vs_random"] == pytest.approx(g["accuracy"] - at)
    assert "beside: trigreason" in result.stdout
    assert "trigreason (beside)" in (second / "report.html").read_text()
    assert (second / "pareto.png").read_bytes().startswith(b"\x89PNG")

    # Not the same problems, not the same decoding, not a calibration: refused before anything runs.
    def no_executor(*_args: Any) -> Any:
        raise AssertionError("a refused --beside must run nothing")

    monkeypatch.setattr("trigreason.cli._calibrate.executor", no_executor)
    fewer = [a if a != "2" else "1" for a in args]
    for bad, why in (
        (fewer, "give the same --dataset and --limit"),
        ([*args, "--max-tokens", "64"], "max_tokens=8192, this calibration with 64"),
        ([*args, "--srm-model", "tiny"], "used the SRM 'srm', this calibration 'tiny'"),
        ([*args[:-1], str(data), "--report-only"], "is not a calibration.json"),
        ([*args[:-1], str(tmp_path / "nowhere.json")], "No such file"),
    ):
        result = CliRunner().invoke(app, bad)
        assert result.exit_code == 2, result.output
        # The error box wraps anywhere, even inside a path: compare without spaces and borders.
        assert why.replace(" ", "") in re.sub(r"[\s│]", "", result.output), result.output


# -- grid axes from the policy registry ------------------------------------------------------------------


def test_grid_axes_take_any_numeric_parameter_of_the_policy() -> None:
    reg = PolicyRegistry.builtin()
    axes = grid_axes(reg, "specreason", {"judge_threshold": [5, 7.5], "judge_top_n": [10.0, 20.0]})
    assert axes == {"judge_threshold": [5, 7.5], "judge_top_n": [10, 20]}
    assert all(isinstance(v, int) for v in axes["judge_top_n"])  # an integer parameter's values are ints


@pytest.mark.parametrize(
    ("policy", "axes", "message"),
    [
        ("trigreason", {"rhoo": [0.5]}, r"'rhoo' is not one of its parameters \(did you mean 'rho'\?\)"),
        ("trigreason", {"rho": [0.5, 1.5]}, r"rho=1\.5 is above its maximum 1"),
        ("trigreason", {"tau": [0.0]}, r"tau=0 is not above its exclusive minimum 0"),
        ("trigreason", {"k": [0]}, r"k=0 is below its minimum 1"),
        ("trigreason", {"k": [2.5]}, r"k=2\.5 is not an integer"),
        ("specreason", {"judge_mode": [1]}, r"'judge_mode' is not numeric"),
        ("specreason", {"rho": [0.5]}, r"numeric parameters: judge_threshold, judge_top_n"),
        ("trigreasn", {"rho": [0.5]}, r"did you mean 'trigreason'"),
    ],
)
def test_grid_axes_are_checked_against_the_registry(
    policy: str, axes: dict[str, list[float]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        grid_axes(PolicyRegistry.builtin(), policy, axes)


def test_a_plan_for_another_policy_puts_its_grid_in_policy_params() -> None:
    base = SessionParams(policy_params={"rho": 0.7})  # another policy's value: kept, not used
    plan = plan_calibration(
        base, {"judge_threshold": [6.0, 8.0]}, [0.5], policy="specreason", registry=PolicyRegistry.builtin()
    )
    assert plan.policy == "specreason"
    assert [p.policy for p in plan.grid_params] == ["specreason", "specreason"]
    assert [p.policy_params["judge_threshold"] for p in plan.grid_params] == [6.0, 8.0]
    assert plan.point_dir(plan.points[0]) == "specreason-judge_threshold6.0"
    # specreason does not prime: the random baseline primes as it does by default
    assert plan.random_points == [{"offload_p": 0.5, "priming_steps": 20}]
    assert plan.random_params[0].policy_params["offload_p"] == 0.5


def test_a_plan_overrides_a_v1_flat_knob_of_the_base() -> None:
    reg = PolicyRegistry.builtin()
    plan = plan_calibration(SessionParams(rho=0.3), {"rho": [0.6]}, [], registry=reg)
    assert plan.point_dir(plan.points[0]) == "rho0.6"  # TrigReason's directories keep their names
    assert reg.resolve(plan.grid_params[0])[1].rho == 0.6


def test_calibrate_takes_grid_axes_and_its_shorthands_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    plans: list[Any] = []

    def capture(*args: Any, **kwargs: Any) -> Any:
        plans.append(plan_calibration(*args, **kwargs))
        raise ConfigError("planned")  # stop before anything loads or runs

    monkeypatch.setattr("trigreason.cli._calibrate.plan_calibration", capture)
    shorthand = ["calibrate", "--rho", "0.5,0.9", "--m", "2", "--priming-steps", "1"]
    long = ["calibrate", "--grid", "rho=0.5,0.9", "--grid", "m=2", "--priming-steps", "1"]
    default = ["calibrate", "--tau", "1.1"]
    for args in (shorthand, long, default):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2
        assert "planned" in result.output
    a, b, c = plans
    assert a.points == [
        {"rho": 0.5, "priming_steps": 1, "m": 2},
        {"rho": 0.9, "priming_steps": 1, "m": 2},
    ]
    assert b.points == a.points
    assert [p.policy_params["rho"] for p in b.grid_params] == [0.5, 0.9]
    # rho's default values and TrigReason's priming, in the order its run directories are named
    assert [point_slug(p) for p in c.points] == [
        f"rho{r}-tau1.1-priming_steps20" for r in (0.8, 0.9, 0.95, 0.99)
    ]
