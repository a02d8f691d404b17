"""run_eval: rows written as runs finish, same seeds across policies, resume skips finished rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripted import ScriptedBackend
from tests.support import step
from trigreason.eval import InProcessExecutor, Outcome, Problem, complete_rows, read_rows, run_eval
from trigreason.proto import ConfigError, SessionParams

PROBLEMS = [
    Problem(id="t/0", question="What is 3 + 4?", gold="7", grade="numeric"),
    Problem(id="t/1", question="What is 2 + 2?", gold="4", grade="numeric"),
]


class CountingExecutor:
    """Answers every question with 7 through the real in-process runner, and counts the runs."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, int]] = []

    async def solve(self, question: str, params: SessionParams, session_id: str) -> Outcome:
        self.runs.append((question, params.policy, params.seed))
        final = step("So \\boxed{7}.")
        ex = InProcessExecutor(ScriptedBackend("srm", default=final), ScriptedBackend("lrm", default=final))
        return await ex.solve(question, params, session_id)


async def test_rows_are_graded_and_seeds_match_across_policies(tmp_path: Path) -> None:
    ex = CountingExecutor()
    rows = await run_eval(
        PROBLEMS, ["lrm-only", "srm-only"], samples=2, params=SessionParams(), executor=ex, out_dir=tmp_path
    )
    assert len(rows) == len(ex.runs) == 8
    assert [r.correct for r in rows if r.sample == 0] == [True, True, False, False]
    seeds: dict[tuple[str, int], set[int]] = {(r.problem_id, r.sample): set() for r in rows}
    for r in rows:
        seeds[(r.problem_id, r.sample)].add(r.seed)
    assert all(len(s) == 1 for s in seeds.values())  # the same seed under every policy
    assert len({next(iter(s)) for s in seeds.values()}) == 4  # and different ones across problems/samples
    lrm = next(r for r in rows if r.policy == "lrm-only")
    assert lrm.steps[0].role == "lrm"
    assert lrm.stats.lrm_tokens > 0
    assert len(read_rows(tmp_path / "results.jsonl")) == 8


async def test_resume_skips_finished_rows_and_redoes_a_torn_one(tmp_path: Path) -> None:
    params = SessionParams()
    first = CountingExecutor()
    await run_eval(
        PROBLEMS, ["trigreason", "srm-only"], samples=1, params=params, executor=first, out_dir=tmp_path
    )
    assert len(first.runs) == 4

    again = CountingExecutor()
    rows = await run_eval(
        PROBLEMS, ["trigreason", "srm-only"], samples=1, params=params, executor=again, out_dir=tmp_path
    )
    assert again.runs == []
    assert len(rows) == 4

    # A crash mid-write leaves a torn last line: that run is done again, the others are kept.
    results = tmp_path / "results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    torn = json.loads(lines[-1])
    third = CountingExecutor()
    rows = await run_eval(
        PROBLEMS, ["trigreason", "srm-only"], samples=1, params=params, executor=third, out_dir=tmp_path
    )
    assert [(q, p) for q, p, _ in third.runs] == [(torn["question"], torn["policy"])]
    assert len(rows) == 4

    # A new policy runs only what is new.
    fourth = CountingExecutor()
    await run_eval(
        PROBLEMS, ["trigreason", "lrm-only"], samples=1, params=params, executor=fourth, out_dir=tmp_path
    )
    assert sorted(p for _, p, _ in fourth.runs) == ["lrm-only", "lrm-only"]


async def test_resuming_with_other_parameters_is_refused_before_anything_runs(tmp_path: Path) -> None:
    params = SessionParams(policy_params={"rho": 0.7}, temperature=0.0)
    await run_eval(
        PROBLEMS[:1], ["trigreason"], samples=1, params=params, executor=CountingExecutor(), out_dir=tmp_path
    )
    refused = CountingExecutor()
    for other, named in (
        (SessionParams(policy_params={"rho": 0.8}, temperature=0.0), "policy_params.rho 0.7 there, 0.8 now"),
        (SessionParams(policy_params={"rho": 0.7}, temperature=0.6), "temperature 0.0 there, 0.6 now"),
        (SessionParams(policy_params={"rho": 0.7}, temperature=0.0, seed=5), "seed"),
    ):
        with pytest.raises(ConfigError, match="holds trigreason runs made with other parameters") as caught:
            await run_eval(
                PROBLEMS, ["trigreason"], samples=1, params=other, executor=refused, out_dir=tmp_path
            )
        assert named in caught.value.message
    assert refused.runs == []
    # The same run asked for in v1's flat form, with another policy's parameters beside its own: the
    # same runs, resumed.
    same = CountingExecutor()
    v1 = SessionParams(rho=0.7, temperature=0.0, policy_params={"threshold": -1.0})
    rows = await run_eval(PROBLEMS, ["trigreason"], samples=1, params=v1, executor=same, out_dir=tmp_path)
    assert [q for q, _, _ in same.runs] == [PROBLEMS[1].question]
    assert len(rows) == 2


async def test_a_failing_backend_is_a_failed_row_not_a_crash(tmp_path: Path) -> None:
    ex = InProcessExecutor(ScriptedBackend("srm"), ScriptedBackend("lrm"))  # empty scripts: BackendError
    rows = await run_eval(
        PROBLEMS[:1], ["srm-only"], samples=1, params=SessionParams(), executor=ex, out_dir=tmp_path
    )
    assert rows[0].failed
    assert not rows[0].correct
    assert rows[0].error


async def test_a_report_of_a_run_under_way_compares_policies_on_the_same_problems(tmp_path: Path) -> None:
    ex = CountingExecutor()
    rows = await run_eval(
        PROBLEMS, ["lrm-only", "srm-only"], samples=1, params=SessionParams(), executor=ex, out_dir=tmp_path
    )
    partial = [r for r in rows if not (r.problem_id == "t/1" and r.policy == "srm-only")]
    done = complete_rows(partial, PROBLEMS, ["lrm-only", "srm-only"], 1)
    assert [(r.problem_id, r.policy) for r in done] == [("t/0", "lrm-only"), ("t/0", "srm-only")]
