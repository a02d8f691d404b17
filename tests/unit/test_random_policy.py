"""The matched random baseline: the same priming as TrigReason, then each SRM step replaced with
probability ``offload_p``, drawn from the session's seed. Pure and reproducible."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.support import drive, scripted, step
from trigreason.cli import app
from trigreason.proto import SessionParams
from trigreason.services.trigger_evaluator import random_offload

Q = "What is 3 + 4?"
CALM = step("We add 3 and 4.")
FINAL = step("So the answer is \\boxed{7}.")


def test_the_draw_is_a_function_of_seed_step_and_attempt() -> None:
    draws = [random_offload(seed=7, step_index=i, attempt=0, offload_p=0.5) for i in range(200)]
    assert draws == [random_offload(seed=7, step_index=i, attempt=0, offload_p=0.5) for i in range(200)]
    other = [random_offload(seed=8, step_index=i, attempt=0, offload_p=0.5) for i in range(200)]
    assert draws != other  # another seed, other steps
    retried = [random_offload(seed=7, step_index=i, attempt=1, offload_p=0.5) for i in range(200)]
    assert draws != retried  # a retried step draws again


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_the_rate_is_offload_p(p: float) -> None:
    n = 20_000
    hits = sum(
        random_offload(seed=s, step_index=i, attempt=0, offload_p=p)
        for s in range(20)
        for i in range(n // 20)
    )
    # Binomial: 4 standard deviations is a failure once in ~15,000 runs of a correct draw.
    tolerance = 4 * (p * (1 - p) / n) ** 0.5
    assert abs(hits / n - p) <= tolerance


def _trace(p: float, seed: int) -> list[tuple[str, str | None]]:
    params = SessionParams(policy="random", priming_steps=2, offload_p=p, seed=seed, max_steps=40)
    trace = drive(Q, params, srm=scripted(*[CALM] * 60), lrm=scripted(*[f"L{i}" for i in range(60)]))
    return [(s.role, s.trigger) for s in trace.state.steps]


def test_priming_as_trigreason_then_random_replacements_only() -> None:
    steps = _trace(0.5, seed=3)
    assert steps[:2] == [("lrm", "priming"), ("lrm", "priming")]
    after = steps[2:]
    assert {t for _r, t in after} <= {None, "random"}  # no offload or intervention, whatever the step
    assert ("lrm", "random") in after
    assert ("srm", None) in after
    assert steps == _trace(0.5, seed=3)  # reproducible
    assert _trace(0.0, seed=3)[2:] == [("srm", None)] * len(_trace(0.0, seed=3)[2:])
    assert {r for r, _t in _trace(1.0, seed=3)} == {"lrm"}


def test_triggers_replay_knows_the_random_baseline(tmp_path: object) -> None:
    lines = "\n".join(json.dumps({"text": f"step {i}", "token_logprobs": [-0.001] * 5}) for i in range(40))
    result = CliRunner().invoke(
        app,
        ["triggers", "replay", "-", "--policy", "random", "--offload-p", "0.5", "--seed", "3"],
        input=lines,
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    verdicts = [r["verdict"] for r in rows]
    assert set(verdicts) == {"random", "accept"}  # r_s is 1 everywhere; TrigReason would offload all
    assert verdicts == [
        "random" if random_offload(seed=3, step_index=i, attempt=0, offload_p=0.5) else "accept"
        for i in range(40)
    ]
