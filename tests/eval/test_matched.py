"""The matched random baseline in eval: TrigReason against random at the same replaced share, paired."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from tests.scripted import ScriptedBackend
from tests.support import CONFIDENT, step
from trigreason.cli import app
from trigreason.eval import (
    EdgeCloudModel,
    InProcessExecutor,
    Problem,
    Row,
    Summary,
    matched_comparison,
    mcnemar_exact_p,
    replaced_share,
    run_eval,
    summarize,
)
from trigreason.proto import SessionParams, SessionStats


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 0, 1.0),
        (5, 5, 1.0),
        (10, 0, 2 / 2**10),  # all discordant pairs one way
        (7, 2, 2 * sum(math.comb(9, i) for i in range(3)) / 2**9),
        (2, 7, 2 * sum(math.comb(9, i) for i in range(3)) / 2**9),  # symmetric
    ],
)
def test_mcnemar_exact(b: int, c: int, expected: float) -> None:
    assert mcnemar_exact_p(b, c) == pytest.approx(expected)


def test_replaced_share_counts_the_triggers_that_discard_srm_steps() -> None:
    stats = [
        SessionStats(srm_steps=6, triggers={"priming": 2, "offload": 1, "intervention": 1}),
        SessionStats(srm_steps=2, triggers={"judge_reject": 1, "random": 1}),
    ]
    assert replaced_share(stats) == pytest.approx(4 / 12)  # priming replaces nothing
    assert replaced_share([]) == 0.0


def _rows(pairs: list[tuple[bool, bool]]) -> list[Row]:
    rows = []
    for i, (tr, rnd) in enumerate(pairs):
        for policy, ok in (("trigreason", tr), ("random", rnd)):
            rows.append(
                Row(problem_id=f"p{i}", policy=policy, correct=ok, params=SessionParams(offload_p=0.25),
                    stats=SessionStats(srm_steps=3, triggers={"offload": 1}))
            )  # fmt: skip
    return rows


def test_a_summary_written_before_the_policy_neutral_names_decodes_with_them() -> None:
    """docs/results/gsm8k-local/summary.json was written with the trigreason_* names only."""
    path = Path(__file__).parents[2] / "docs/results/gsm8k-local/summary.json"
    doc = json.loads(path.read_text())
    old = doc["trigreason_vs_random"]
    assert "policy_accuracy" not in old
    versus = msgspec.json.decode(path.read_bytes(), type=Summary).trigreason_vs_random
    assert versus is not None
    assert versus.policy_accuracy == old["trigreason_accuracy"]
    assert versus.policy_replaced_share == old["trigreason_replaced_share"]
    assert versus.policy_right_random_wrong == old["trigreason_right_random_wrong"]
    assert versus.random_right_policy_wrong == old["random_right_trigreason_wrong"]
    # Written again, it carries both sets of names.
    again = json.loads(msgspec.json.encode(versus))
    assert again["policy_accuracy"] == again["trigreason_accuracy"] == old["trigreason_accuracy"]


def test_the_paired_comparison() -> None:
    pairs = [(True, False)] * 12 + [(False, True)] * 2 + [(True, True)] * 10 + [(False, False)] * 6
    got = matched_comparison(_rows(pairs))
    assert got is not None
    assert got.pairs == 30
    assert (got.policy_right_random_wrong, got.random_right_policy_wrong) == (12, 2)
    assert (got.policy_accuracy, got.policy_replaced_share) == (22 / 30, 0.25)
    # The names files had before other policies could be compared carry the same values.
    assert (got.trigreason_right_random_wrong, got.random_right_trigreason_wrong) == (12, 2)
    assert (got.trigreason_accuracy, got.trigreason_replaced_share) == (22 / 30, 0.25)
    assert got.accuracy_difference == pytest.approx(10 / 30)
    low, high = got.accuracy_difference_ci95
    assert 0 < low < 10 / 30 < high
    assert got.mcnemar_p == pytest.approx(mcnemar_exact_p(12, 2))
    assert got.verdict.startswith("trigreason beats random")
    assert got.random_offload_p == 0.25
    assert matched_comparison(_rows(pairs)) == got  # no randomness: the same every time
    even = matched_comparison(_rows([(True, False), (False, True)] * 5))
    assert even is not None
    assert even.verdict.startswith("no difference shown")
    assert (even.significant, even.discordant_pairs_needed) == (False, None)  # 5 vs 5: an even split
    assert got.significant
    assert (got.alpha, got.verdict_rule) == (
        0.05,
        "exact McNemar test on the discordant pairs, two-sided, alpha 0.05",
    )
    assert "Clopper-Pearson" in got.accuracy_difference_ci95_method
    assert matched_comparison([r for r in _rows(pairs) if r.policy == "trigreason"]) is None


async def test_a_matched_run_through_the_runner(tmp_path: Path) -> None:
    """TrigReason offloads every confident SRM step; the random baseline runs the same problems and seeds at
    TrigReason's replaced share, and the summary compares them pairwise."""
    sure = step("3 + 4 = 7.", [CONFIDENT] * 8)
    final = step("So \\boxed{7}.")
    problems = [Problem(id=f"t/{i}", question="What is 3 + 4?", gold="7", grade="numeric") for i in range(6)]

    class Executor:
        async def solve(self, question: str, params: SessionParams, session_id: str) -> Any:
            srm = ScriptedBackend("srm", [sure, sure, final], default=final)
            lrm = ScriptedBackend("lrm", default=step("Adding."))
            return await InProcessExecutor(srm, lrm).solve(question, params, session_id)

    params = SessionParams(priming_steps=1, rho=0.5, max_steps=12)
    rows = await run_eval(
        problems, ["trigreason"], samples=1, params=params, executor=Executor(), out_dir=tmp_path
    )
    p = replaced_share(r.stats for r in rows)
    assert 0 < p < 1
    matched = SessionParams(priming_steps=1, rho=0.5, max_steps=12, offload_p=p)
    rows += await run_eval(
        problems, ["random"], samples=1, params=matched, executor=Executor(), out_dir=tmp_path
    )
    assert {r.seed for r in rows if r.policy == "random"} == {
        r.seed for r in rows if r.policy == "trigreason"
    }
    summary = summarize(rows, EdgeCloudModel())
    versus = summary.trigreason_vs_random
    assert versus is not None
    assert versus.pairs == 6
    assert versus.random_offload_p == pytest.approx(p)
    assert "random" in summary.policies

    # The same comparison from the stored rows through the CLI: eval --report-only runs nothing.
    data = tmp_path / "t.jsonl"  # ids t/0 .. t/5, as above
    data.write_text(
        "".join(json.dumps({"question": "What is 3 + 4?", "answer": "7"}) + "\n" for _ in range(6))
    )
    args = ["eval", "--dataset", str(data), "--policies", "trigreason", "--matched-random", "--report-only",
            "--out", str(tmp_path), "--priming-steps", "1", "--rho", "0.5"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["trigreason_vs_random"] == json.loads(msgspec.json.encode(versus))
    assert doc["trigreason_vs_random"]["verdict"] == versus.verdict
    assert (tmp_path / "report.html").exists()
    result = CliRunner().invoke(app, [*args[:-6], "--out", str(tmp_path / "empty")])
    assert result.exit_code == 2
    assert "has no problem with every run done" in result.output


async def test_likelihood_matched_to_random_through_the_runner(tmp_path: Path) -> None:
    """eval --matched-random --matched-to likelihood: random runs at likelihood's replaced share (its
    'unlikely' steps), and the summary's vs_random.likelihood compares them pairwise."""
    from trigreason.eval import evaluate

    final = step("So \\boxed{7}.")
    problems = [Problem(id=f"l/{i}", question="What is 3 + 4?", gold="7", grade="numeric") for i in range(4)]

    class Executor:
        async def solve(self, question: str, params: SessionParams, session_id: str) -> Any:
            srm = ScriptedBackend("srm", [step("We add."), final], default=final)
            # The LRM finds the first SRM step unlikely, the answer likely.
            lrm = ScriptedBackend("lrm", default=step("Adding."), score_logprobs=[-3.0, -0.1, -0.1])
            return await InProcessExecutor(srm, lrm).solve(question, params, session_id)

    params = SessionParams(priming_steps=0, max_steps=12, policy_params={"threshold": -1.0})
    rows = await evaluate(
        problems, ["likelihood"], samples=1, params=params, executor=Executor(), out_dir=tmp_path,
        matched_random=True, matched_to="likelihood",
    )  # fmt: skip
    p = replaced_share(r.stats for r in rows if r.policy == "likelihood")
    assert p == pytest.approx(1 / 2)  # one of two SRM steps replaced in each run
    assert all(r.stats.score_calls == 2 for r in rows if r.policy == "likelihood")
    summary = summarize(rows, EdgeCloudModel())
    assert summary.trigreason_vs_random is None
    versus = summary.vs_random["likelihood"]
    assert (versus.policy, versus.pairs, versus.policy_accuracy) == ("likelihood", 4, 1.0)
    assert versus.policy_replaced_share == pytest.approx(p)
    assert versus.random_offload_p == pytest.approx(p)
    assert 0.0 <= versus.mcnemar_p <= 1.0
    # Its scoring calls are in the summary and the edge-cloud cost: one generated token each.
    assert summary.policies["likelihood"].score_calls == 2
    assert summary.policies["random"].score_calls == 0
    assert summary.policies["likelihood"].edge_cloud.api_cost_usd > 0
