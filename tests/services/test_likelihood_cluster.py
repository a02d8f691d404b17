"""The likelihood policy through the cluster (services on a real nats-server, the LRM worker making the
scoring call) and through the in-process runner: the same trajectory and the scoring calls counted."""

from __future__ import annotations

from tests.scripted import ScriptedBackend
from tests.services.cluster import Cluster, start_all, submit_and_wait
from tests.support import step
from trigreason.proto import SessionFinished, SessionParams, StepCommitted, Verdict
from trigreason.runner import run_session

PARAMS = SessionParams(policy="likelihood", priming_steps=0, policy_params={"threshold": -1.0})


def _backends() -> tuple[ScriptedBackend, ScriptedBackend]:
    srm = ScriptedBackend("srm", [step("We add 3 and 4."), step("So \\boxed{7}.")])
    # The first SRM step reads unlikely to the LRM (-3 per token), the second likely.
    lrm = ScriptedBackend("lrm", [step("3 + 4 = 7.")], score_logprobs=[-3.0, -0.1])
    return srm, lrm


async def test_likelihood_scores_each_srm_step_on_the_lrm_worker(cluster: Cluster) -> None:
    srm, lrm = _backends()
    await start_all(cluster, srm, lrm)
    events = await submit_and_wait(cluster.server.url, "lk1", "What is 3 + 4?", PARAMS)
    committed = [(e.role, e.trigger, e.text) for e in events if isinstance(e, StepCommitted)]
    assert committed == [("lrm", "unlikely", "3 + 4 = 7."), ("srm", None, "So \\boxed{7}.")]
    # The LRM read each SRM step as the continuation of its own prompt.
    assert [c for _, c in lrm.scored] == ["We add 3 and 4.", "So \\boxed{7}."]
    assert lrm.scored[0][0].endswith("<|im_start|>assistant\n") or "What is 3 + 4?" in lrm.scored[0][0]
    assert lrm.scored[1][0].endswith("3 + 4 = 7.\n\n")
    verdicts = [e for e in events if isinstance(e, Verdict)]
    assert [(v.decision, v.score_stat, v.score_threshold) for v in verdicts] == [
        ("replace", -3.0, -1.0),
        ("accept", -0.1, -1.0),
    ]
    (end,) = [e for e in events if isinstance(e, SessionFinished)]
    assert end.stats.score_calls == 2
    assert end.stats.judge_calls == 0
    assert end.stats.lrm_calls == 3
    assert end.stats.triggers == {"unlikely": 1}

    srm2, lrm2 = _backends()
    reference = await run_session("What is 3 + 4?", PARAMS, srm=srm2, lrm=lrm2, session_id="lk1")
    assert [(s.role, s.trigger, s.text) for s in reference.steps] == committed
    assert reference.stats.score_calls == 2
    assert reference.stats.lrm_calls == 3
    assert lrm2.scored == lrm.scored
