"""`trigreason triggers replay` on the shipped sample and on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trigreason.cli import app

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "srm_steps.jsonl"


def _replay(*args: str, stdin: str | None = None) -> tuple[int, list[dict[str, object]], str]:
    result = CliRunner().invoke(app, ["triggers", "replay", *args], input=stdin)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, rows, result.stderr


def test_sample_with_defaults() -> None:
    code, rows, _ = _replay(str(SAMPLE))
    assert code == 0
    assert [r["verdict"] for r in rows] == ["accept", "accept", "intervene", "offload", "accept", "accept"]
    assert [r["hesitation"] for r in rows] == [False, True, True, False, True, False]
    # The run reaches k=2 on step 2; the LRM writes next, so step 4 starts a new run.
    assert [r["hesitation_run"] for r in rows] == [0, 1, 2, 0, 1, 0]
    assert rows[3]["r_s"] == pytest.approx(0.9)
    assert set(rows[0]) == {"index", "r_s", "hesitation", "hesitation_run", "verdict", "tokens"}


@pytest.mark.parametrize(
    ("flags", "verdicts"),
    [
        (["--rho", "1"], ["accept", "accept", "intervene", "accept", "accept", "accept"]),
        (["--k", "3"], ["accept", "accept", "accept", "offload", "accept", "accept"]),
        (["--k", "1"], ["accept", "intervene", "intervene", "offload", "intervene", "accept"]),
        (
            ["--hesitation", "clips", "--rho", "0.5"],
            ["offload", "accept", "intervene", "offload", "accept", "offload"],
        ),
        (["--tau", "1.0"], ["accept", "accept", "intervene", "accept", "accept", "accept"]),
    ],
)
def test_flags_change_the_verdicts(flags: list[str], verdicts: list[str]) -> None:
    code, rows, _ = _replay(str(SAMPLE), *flags)
    assert code == 0
    assert [r["verdict"] for r in rows] == verdicts


def test_reads_stdin() -> None:
    code, rows, _ = _replay("-", stdin='{"text": "Wait.", "token_logprobs": [0.0]}\n')
    assert code == 0
    assert rows == [
        {"index": 0, "r_s": 1.0, "hesitation": True, "hesitation_run": 1, "verdict": "offload", "tokens": 1}
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "a", "token_logprobs": [0.0]}\nnot json\n', ":2: "),
        ('{"text": "a"}\n', "token_logprobs"),
        ('{"text": "a", "token_logprobs": [0.5]}\n', "<= 0.0"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "steps.jsonl"
    f.write_text(content)
    code, rows, err = _replay(str(f))
    assert code == 2
    assert rows == []
    assert message in err


def test_missing_file() -> None:
    code, _, err = _replay("/nonexistent/steps.jsonl")
    assert code == 2
    assert "cannot read" in err


def test_installed_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trigreason", "triggers", "replay", str(SAMPLE), "--table"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "intervene" in out.stdout
    assert "offload" in out.stdout


def test_likelihood_replays_given_the_lrm_logprobs() -> None:
    lines = [
        {"text": "We add.", "token_logprobs": [-0.5, -0.5], "lrm_token_logprobs": [-0.2, -0.4]},
        {"text": "Banana.", "token_logprobs": [-0.5], "lrm_token_logprobs": [-3.0, None]},  # null: -inf
        {"text": "", "token_logprobs": [], "lrm_token_logprobs": []},  # empty: accepted, not scored
        {"text": "So 7.", "token_logprobs": [-0.1], "lrm_token_logprobs": [-1.2, -1.0]},
    ]
    stdin = "\n".join(json.dumps(x) for x in lines)
    code, rows, _ = _replay("-", "--policy", "likelihood", "--threshold", "-1.0", stdin=stdin)
    assert code == 0
    assert [r["verdict"] for r in rows] == ["accept", "unlikely", "accept", "unlikely"]
    assert [r.get("score_stat") for r in rows] == [pytest.approx(-0.3), None, None, pytest.approx(-1.1)]
    code, rows, _ = _replay(
        "-", "--policy", "likelihood", "--statistic", "low_share", "--threshold", "0.4", stdin=stdin
    )
    assert [r["verdict"] for r in rows] == ["accept", "unlikely", "accept", "accept"]


def test_likelihood_without_lrm_logprobs_is_a_clear_error() -> None:
    stdin = json.dumps({"text": "We add.", "token_logprobs": [-0.5]})
    code, _, err = _replay("-", "--policy", "likelihood", stdin=stdin)
    assert code == 2
    assert "lrm_token_logprobs" in err
