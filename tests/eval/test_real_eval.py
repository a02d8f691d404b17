"""One real eval: two GSM8K problems on the tiny model through the CPU inference server, via the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_eval_of_two_problems_with_the_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "trigreason", "eval", "--dataset", "gsm8k", "--limit", "2",
           "--policies", "trigreason,srm-only", "--srm-model", "tiny", "--lrm-model", "tiny",
           "--priming-steps", "1", "--temperature", "0", "--max-tokens", "96", "--out", str(out),
           # Short steps and a high offload threshold, so that whatever the tiny model writes on this CPU
           # (greedy text differs between llama.cpp builds) the priming step leaves room for SRM steps.
           "--step-max-tokens", "32", "--rho", "0.99"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=850, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["problem_id"], r["policy"]) for r in rows) == [
        ("gsm8k/0", "srm-only"), ("gsm8k/0", "trigreason"),
        ("gsm8k/1", "srm-only"), ("gsm8k/1", "trigreason"),
    ]  # fmt: skip
    for r in rows:
        assert r["steps"], r
        assert isinstance(r["correct"], bool)
        assert sum(s["tokens"] for s in r["steps"]) == r["stats"]["srm_tokens"] + r["stats"]["lrm_tokens"]
        if r["policy"] == "trigreason":
            assert (r["steps"][0]["role"], r["steps"][0]["trigger"]) == ("lrm", "priming")
        else:
            assert {s["role"] for s in r["steps"]} == {"srm"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["policies"]) == {"trigreason", "srm-only"}
    assert summary["policies"]["srm-only"]["srm_token_ratio"] == 1.0
    assert 0.0 < summary["policies"]["trigreason"]["srm_token_ratio"] < 1.0
    assert summary["policies"]["trigreason"]["edge_cloud"]["api_cost_usd"] > 0
    report = (out / "report.html").read_text()
    assert report.count("<img") >= 3
    assert (out / "plots" / "accuracy_vs_srm_ratio.png").read_bytes().startswith(b"\x89PNG")
    assert "srm-only" in proc.stdout  # the summary table


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_calibrate_of_one_problem_with_the_tiny_model(tmp_path: Path) -> None:
    out, prof = tmp_path / "cal", tmp_path / "p.json"
    cmd = [sys.executable, "-m", "trigreason", "calibrate", "--dataset", "gsm8k-train", "--limit", "1",
           "--rho", "0.9", "--priming-steps", "1", "--random-p", "0.5", "--srm-model", "tiny",
           "--lrm-model", "tiny", "--temperature", "0", "--max-tokens", "96", "--out", str(out),
           "--profile-out", str(prof)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=850, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in out.iterdir() if p.is_dir()} == {
        "lrm-only",
        "srm-only",
        "random-offload_p0.5",
        "rho0.9-priming_steps1",
    }
    c = json.loads(prof.read_text())["calibration"]
    assert c["end_points"]["srm-only"]["srm_token_ratio"] == 1.0
    assert c["end_points"]["lrm-only"]["srm_token_ratio"] == 0.0
    assert 0.0 <= c["random"][0]["srm_token_ratio"] < 1.0  # measured, priming included
    assert isinstance(c["beats_random"], bool)
    assert c["margin_vs_random"] == pytest.approx(c["grid"][0]["accuracy"] - c["random_accuracy_at_ratio"])
    assert len(c["front"]) == 1
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "report.html").exists()
    assert (out / "calibration.json").exists()
