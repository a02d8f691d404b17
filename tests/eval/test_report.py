"""report.html and the PNG plots with the random policy in the rows and the matched comparison in the
summary; the calibration report (pareto.png and its page) from a calibration block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from tests.eval.test_summary import _row
from trigreason.eval import (
    Calibration,
    EdgeCloudModel,
    GridPoint,
    Row,
    StepRow,
    pareto_summary,
    summarize,
    write_calibration_report,
    write_report,
)
from trigreason.proto import SessionParams


def _rows() -> list[Row]:
    rows = []
    for i in range(4):
        pid = f"p{i}"
        rows.append(_row(pid, "lrm-only", True, lrm_tokens=100, lrm_steps=2, lrm_calls=2))
        rows.append(_row(pid, "srm-only", i == 0, srm_tokens=100, srm_steps=2, srm_calls=2))
        rows.append(_row(pid, "trigreason", i < 3, srm_tokens=60, lrm_tokens=40, srm_steps=2, lrm_steps=1,
                         lrm_calls=1, triggers={"priming": 1, "offload": 1}))  # fmt: skip
        random = _row(pid, "random", i < 2, srm_tokens=50, lrm_tokens=50, srm_steps=2, lrm_steps=1,
                      lrm_calls=1, triggers={"priming": 1, "random": 1})  # fmt: skip
        steps = [
            StepRow(index=0, role="lrm", text="", tokens=20, trigger="priming"),
            StepRow(index=1, role="lrm", text="", tokens=30, trigger="random"),
            StepRow(index=2, role="srm", text="", tokens=50),
        ]
        rows.append(msgspec.structs.replace(random, params=SessionParams(offload_p=0.33), steps=steps))
    return rows


def test_the_report_shows_the_random_policy_and_the_matched_comparison(tmp_path: Path) -> None:
    rows = _rows()
    summary = summarize(rows, EdgeCloudModel())
    assert summary.trigreason_vs_random is not None
    write_report(tmp_path / "report.html", rows, summary, plots_dir=tmp_path / "plots")
    page = (tmp_path / "report.html").read_text()
    assert "<td>random</td>" in page  # a row of the policy table
    assert "TrigReason against random at the same replaced share" in page
    assert "exact McNemar p" in page
    assert "no difference shown" in page  # 1 vs 0 discordant pairs
    assert "95% interval" in page
    assert "<td>TrigReason right, random wrong</td><td>1</td>" in page
    assert "0.33" in page  # the baseline's offload_p
    for name in ("accuracy_vs_srm_ratio.png", "timelines.png"):
        assert (tmp_path / "plots" / name).read_bytes().startswith(b"\x89PNG")


def test_without_a_random_run_there_is_no_comparison(tmp_path: Path) -> None:
    rows = [r for r in _rows() if r.policy != "random"]
    write_report(tmp_path / "report.html", rows, summarize(rows, EdgeCloudModel()))
    assert "against random" not in (tmp_path / "report.html").read_text()


def test_the_calibration_report(tmp_path: Path) -> None:
    def pt(params: dict[str, Any], ratio: float, acc: float) -> GridPoint:
        return GridPoint(params=params, accuracy=acc, srm_token_ratio=ratio)

    grid = [pt({"rho": 0.5, "priming_steps": 1}, 0.7, 0.6), pt({"rho": 0.9, "priming_steps": 1}, 0.3, 0.9)]
    randoms = [pt({"offload_p": p, "priming_steps": 1}, 1 - p, 0.5) for p in (0.25, 0.5, 0.75)]
    versus = pareto_summary(
        grid,
        randoms,
        lrm_only=pt({"policy": "lrm-only"}, 0.0, 1.0),
        srm_only=pt({"policy": "srm-only"}, 1.0, 0.2),
    )
    calibration = Calibration(
        dataset="cal.jsonl", problems=2, min_accuracy_vs_lrm=0.9, lrm_only_accuracy=1.0,
        srm_only_accuracy=0.2, feasible=True, chosen={"rho": 0.9, "priming_steps": 1}, beats_random=True,
        random_accuracy_at_ratio=0.75, margin_vs_random=0.15, grid=versus.grid, front=versus.front,
        random=versus.random, end_points=versus.end_points,
    )  # fmt: skip
    write_calibration_report(tmp_path, calibration)
    assert (tmp_path / "pareto.png").read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "report.html").read_text()
    assert "<b>rho=0.9 priming_steps=1</b> is above the random baseline" in page
    assert "Descriptive, not a test" in page
    assert page.count("<td>random</td>") == 3
    assert "<td>lrm-only</td>" in page
    assert "<td>srm-only</td>" in page
