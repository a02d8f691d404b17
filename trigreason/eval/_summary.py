"""``summary.json``: per policy, accuracy and what it cost, from the rows of ``results.jsonl``."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable

import msgspec

from trigreason.proto import SessionParams

from ._cost import EdgeCloudModel, edge_cloud
from ._matched import MatchedComparison, matched_comparison
from ._rows import Row

__all__ = ["EdgeCloudFigures", "PolicySummary", "Summary", "summarize"]


class EdgeCloudFigures(msgspec.Struct, kw_only=True, frozen=True):
    """Means per run under the edge-cloud model; ``*_vs_lrm`` relative to LRM-only (None without it)."""

    latency_s: float
    api_cost_usd: float
    latency_vs_lrm: float | None = None
    api_cost_vs_lrm: float | None = None


class PolicySummary(msgspec.Struct, kw_only=True, frozen=True):
    """One policy over its runs (fields in docs/evaluation.md)."""

    runs: int
    correct: int
    accuracy: float
    accuracy_stderr: float
    srm_token_ratio: float
    # Share of committed reasoning steps the SRM wrote (steps offloaded from the LRM to the SRM).
    srm_steps_offloaded_ratio: float
    srm_tokens: int
    lrm_tokens: int
    srm_wasted_tokens: int
    lrm_calls: float
    triggers: dict[str, int]
    failed: int
    end_reasons: dict[str, int]
    wall_s: float
    backend_s: float
    edge_cloud: EdgeCloudFigures
    accuracy_vs_lrm: float | None = None
    # Scoring calls per run (likelihood) and the LRM prompt tokens they read per run (also in lrm_calls).
    score_calls: float = 0.0
    score_prompt_tokens: float = 0.0


class Summary(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """``summary.json``. ``trigreason_vs_random`` only when both ran; ``dataset`` and ``params`` when the
    caller names them."""

    runs: int
    problems: int
    edge_cloud_model: EdgeCloudModel
    policies: dict[str, PolicySummary]
    trigreason_vs_random: MatchedComparison | None = None
    dataset: str | None = None
    params: SessionParams | None = None
    # Every other policy that ran beside random, against it pairwise (eval --matched-random --matched-to
    # likelihood matches random's share to that policy's; compare the two replaced shares in each entry).
    vs_random: dict[str, MatchedComparison] = {}


def summarize(
    rows: list[Row], model: EdgeCloudModel, *, dataset: str | None = None, params: SessionParams | None = None
) -> Summary:
    """Aggregate rows (one per problem, policy and sample) per policy.

    Token shares are over all tokens of the policy's runs (not a mean of per-run ratios); per-run figures
    (``lrm_calls``, ``wall_s``, ``backend_s``, ``edge_cloud``) are means per run. ``*_vs_lrm`` divide by
    the LRM-only policy's figure over the same problems when LRM-only is in the rows.
    """
    by_policy: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_policy[row.policy].append(row)
    policies = {name: _one(runs, model) for name, runs in sorted(by_policy.items())}
    lrm = policies.get("lrm-only")
    if lrm is not None:
        policies = {name: _relative(p, lrm) for name, p in policies.items()}
    return Summary(
        runs=len(rows),
        problems=len({row.problem_id for row in rows}),
        edge_cloud_model=model,
        policies=policies,
        trigreason_vs_random=matched_comparison(rows),
        dataset=dataset,
        params=params,
        vs_random={
            name: m
            for name in sorted(by_policy)
            if name not in ("trigreason", "random") and (m := matched_comparison(rows, name)) is not None
        },
    )


def _relative(p: PolicySummary, lrm: PolicySummary) -> PolicySummary:
    ec = msgspec.structs.replace(
        p.edge_cloud,
        latency_vs_lrm=_ratio(p.edge_cloud.latency_s, lrm.edge_cloud.latency_s),
        api_cost_vs_lrm=_ratio(p.edge_cloud.api_cost_usd, lrm.edge_cloud.api_cost_usd),
    )
    return msgspec.structs.replace(p, edge_cloud=ec, accuracy_vs_lrm=_ratio(p.accuracy, lrm.accuracy))


def _one(runs: list[Row], model: EdgeCloudModel) -> PolicySummary:
    n = len(runs)
    correct = sum(1 for r in runs if r.correct)
    acc = correct / n
    stats = [r.stats for r in runs]
    srm = sum(s.srm_tokens for s in stats)
    lrm = sum(s.lrm_tokens for s in stats)
    srm_steps = sum(s.srm_steps for s in stats)
    lrm_steps = sum(s.lrm_steps for s in stats)
    triggers: Counter[str] = Counter()
    for s in stats:
        triggers.update(s.triggers)
    ec = [edge_cloud(s, model) for s in stats]
    return PolicySummary(
        runs=n,
        correct=correct,
        accuracy=acc,
        accuracy_stderr=math.sqrt(acc * (1 - acc) / n),
        srm_token_ratio=srm / (srm + lrm) if srm + lrm else 0.0,
        srm_steps_offloaded_ratio=srm_steps / (srm_steps + lrm_steps) if srm_steps + lrm_steps else 0.0,
        srm_tokens=srm,
        lrm_tokens=lrm,
        srm_wasted_tokens=sum(s.srm_wasted_tokens for s in stats),
        lrm_calls=statistics.fmean(s.lrm_calls for s in stats),
        score_calls=statistics.fmean(s.score_calls for s in stats),
        score_prompt_tokens=statistics.fmean(s.score_prompt_tokens for s in stats),
        triggers=dict(sorted(triggers.items())),
        failed=sum(1 for r in runs if r.failed),
        end_reasons=_counts(r.end_reason for r in runs),
        wall_s=statistics.fmean(s.wall_s for s in stats),
        backend_s=statistics.fmean(s.srm_backend_s + s.lrm_backend_s for s in stats),
        edge_cloud=EdgeCloudFigures(
            latency_s=statistics.fmean(lat for lat, _ in ec),
            api_cost_usd=statistics.fmean(cost for _, cost in ec),
        ),
    )


def _counts(items: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None
