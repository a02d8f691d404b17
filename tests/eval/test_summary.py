"""summary.json arithmetic on a hand-built results file; the edge-cloud model by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from trigreason.eval import EdgeCloudModel, Row, edge_cloud, summarize
from trigreason.proto import SessionStats

MODEL = EdgeCloudModel(
    lrm_input_usd_per_m=1.0, lrm_cached_input_usd_per_m=0.5, lrm_output_usd_per_m=4.0, srm_usd_per_m=0.1,
    round_trip_s=0.2,
)  # fmt: skip


def _row(pid: str, policy: str, correct: bool, **stats: Any) -> Row:
    return Row(problem_id=pid, policy=policy, correct=correct, end_reason="final_answer",
               stats=SessionStats(**stats))  # fmt: skip


ROWS = [
    # LRM-only: 2 of 2 correct; 100 and 300 tokens; 2 and 4 calls.
    _row("a", "lrm-only", True, lrm_tokens=100, lrm_steps=2, lrm_calls=2, lrm_prompt_tokens=1000,
         lrm_cached_prompt_tokens=600, wall_s=10.0, lrm_backend_s=8.0),
    _row("b", "lrm-only", True, lrm_tokens=300, lrm_steps=4, lrm_calls=4, lrm_prompt_tokens=3000,
         lrm_cached_prompt_tokens=2000, wall_s=30.0, lrm_backend_s=28.0),
    # TrigReason: 1 of 2 correct; 300 SRM + 100 LRM tokens in total.
    _row("a", "trigreason", True, srm_tokens=200, lrm_tokens=50, srm_steps=3, lrm_steps=1, srm_calls=3,
         lrm_calls=1, lrm_prompt_tokens=400, wall_s=6.0, srm_backend_s=3.0, lrm_backend_s=2.0,
         triggers={"priming": 1}),
    _row("b", "trigreason", False, srm_tokens=100, lrm_tokens=50, srm_wasted_tokens=20, srm_steps=2,
         lrm_steps=1, srm_calls=3, lrm_calls=1, lrm_prompt_tokens=600, lrm_cached_prompt_tokens=100,
         wall_s=4.0, srm_backend_s=1.0, lrm_backend_s=1.0, triggers={"priming": 1, "offload": 1}),
]  # fmt: skip


def test_edge_cloud_by_hand() -> None:
    latency, cost = edge_cloud(ROWS[0].stats, MODEL)
    assert latency == pytest.approx(8.0 + 2 * 0.2)
    # 400 uncached at 1.0 + 600 cached at 0.5 + 100 output at 4.0 = 400 + 300 + 400 = 1100 per million
    assert cost == pytest.approx(1100e-6)
    latency, cost = edge_cloud(ROWS[3].stats, MODEL)
    assert latency == pytest.approx(1.0 + 1.0 + 0.2)
    # 500 x 1.0 + 100 x 0.5 + 50 x 4.0 + (100 + 20 SRM) x 0.1 = 500 + 50 + 200 + 12 = 762
    assert cost == pytest.approx(762e-6)


def test_summary_arithmetic() -> None:
    s = summarize(ROWS, MODEL)
    assert (s.runs, s.problems) == (4, 2)
    lrm, trig = s.policies["lrm-only"], s.policies["trigreason"]
    assert lrm.accuracy == 1.0
    assert lrm.accuracy_stderr == 0.0
    assert trig.accuracy == 0.5
    assert trig.accuracy_stderr == pytest.approx(math.sqrt(0.25 / 2))
    assert trig.accuracy_vs_lrm == 0.5
    assert trig.srm_token_ratio == pytest.approx(300 / 400)
    assert trig.srm_steps_offloaded_ratio == pytest.approx(5 / 7)
    assert lrm.srm_token_ratio == 0.0
    assert trig.srm_wasted_tokens == 20
    assert trig.lrm_calls == 1.0
    assert lrm.lrm_calls == 3.0
    assert trig.triggers == {"offload": 1, "priming": 2}
    assert trig.wall_s == 5.0
    assert lrm.wall_s == 20.0
    assert trig.backend_s == pytest.approx((5.0 + 2.0) / 2)
    # latencies: LRM-only (8.4 + 28.8) / 2 = 18.6; TrigReason (5.2 + 2.2) / 2 = 3.7
    assert lrm.edge_cloud.latency_s == pytest.approx(18.6)
    assert trig.edge_cloud.latency_s == pytest.approx(3.7)
    assert trig.edge_cloud.latency_vs_lrm == pytest.approx(3.7 / 18.6)
    # costs: LRM-only a 1100, b 1000 + 1000 + 1200 = 3200 -> mean 2150; TrigReason a 400 + 200 + 20 = 620,
    # b 762 -> mean 691 (all per million)
    assert lrm.edge_cloud.api_cost_usd == pytest.approx(2150e-6)
    assert trig.edge_cloud.api_cost_usd == pytest.approx(691e-6)
    assert trig.edge_cloud.api_cost_vs_lrm == pytest.approx(691 / 2150)
    assert lrm.edge_cloud.api_cost_vs_lrm == 1.0


def test_without_lrm_only_the_relative_figures_are_absent() -> None:
    s = summarize(ROWS[2:], MODEL)
    trig = s.policies["trigreason"]
    assert trig.accuracy_vs_lrm is None
    assert trig.edge_cloud.latency_vs_lrm is None


def test_negative_prices_are_rejected() -> None:
    with pytest.raises(ValueError, match="round_trip_s"):
        EdgeCloudModel(round_trip_s=-1)
