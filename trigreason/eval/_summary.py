"""``summary.json``: per policy, accuracy and what it cost, from the rows of ``results.jsonl``."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from ._cost import EdgeCloudModel, edge_cloud
from ._matched import matched_comparison

__all__ = ["summarize"]


def summarize(rows: list[dict[str, Any]], model: EdgeCloudModel) -> dict[str, Any]:
    """Aggregate rows (one per problem, policy and sample) per policy.

    Token shares are over all tokens of the policy's runs (not a mean of per-run ratios); per-run figures
    (``lrm_calls``, ``wall_s``, ``backend_s``, ``edge_cloud``) are means per run. ``*_vs_lrm`` divide by
    the LRM-only policy's figure over the same problems when LRM-only is in the rows.
    """
    by_policy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_policy[row["policy"]].append(row)
    policies = {name: _one(runs, model) for name, runs in sorted(by_policy.items())}
    lrm = policies.get("lrm-only")
    for figures in policies.values():
        ec = figures["edge_cloud"]
        if lrm is None:
            figures["accuracy_vs_lrm"] = None
            ec["latency_vs_lrm"] = ec["api_cost_vs_lrm"] = None
            continue
        figures["accuracy_vs_lrm"] = _ratio(figures["accuracy"], lrm["accuracy"])
        ec["latency_vs_lrm"] = _ratio(ec["latency_s"], lrm["edge_cloud"]["latency_s"])
        ec["api_cost_vs_lrm"] = _ratio(ec["api_cost_usd"], lrm["edge_cloud"]["api_cost_usd"])
    problems = {row["problem_id"] for row in rows}
    summary: dict[str, Any] = {
        "runs": len(rows),
        "problems": len(problems),
        "edge_cloud_model": {name: getattr(model, name) for name in model.__slots__},
        "policies": policies,
    }
    matched = matched_comparison(rows)
    if matched is not None:
        summary["trigreason_vs_random"] = matched
    return summary


def _one(runs: list[dict[str, Any]], model: EdgeCloudModel) -> dict[str, Any]:
    n = len(runs)
    correct = sum(1 for r in runs if r["correct"])
    acc = correct / n
    stats = [r["stats"] for r in runs]
    srm = sum(s["srm_tokens"] for s in stats)
    lrm = sum(s["lrm_tokens"] for s in stats)
    srm_steps = sum(s["srm_steps"] for s in stats)
    lrm_steps = sum(s["lrm_steps"] for s in stats)
    triggers: dict[str, int] = defaultdict(int)
    for s in stats:
        for kind, count in s["triggers"].items():
            triggers[kind] += count
    ec = [edge_cloud(s, model) for s in stats]
    return {
        "runs": n,
        "correct": correct,
        "accuracy": acc,
        "accuracy_stderr": math.sqrt(acc * (1 - acc) / n),
        "srm_token_ratio": srm / (srm + lrm) if srm + lrm else 0.0,
        # Share of committed reasoning steps the SRM wrote (steps offloaded from the LRM to the SRM).
        "srm_steps_offloaded_ratio": srm_steps / (srm_steps + lrm_steps) if srm_steps + lrm_steps else 0.0,
        "srm_tokens": srm,
        "lrm_tokens": lrm,
        "srm_wasted_tokens": sum(s["srm_wasted_tokens"] for s in stats),
        "lrm_calls": statistics.fmean(s["lrm_calls"] for s in stats),
        "triggers": dict(sorted(triggers.items())),
        "failed": sum(1 for r in runs if r.get("failed")),
        "end_reasons": _counts(r["end_reason"] for r in runs),
        "wall_s": statistics.fmean(s["wall_s"] for s in stats),
        "backend_s": statistics.fmean(s["srm_backend_s"] + s["lrm_backend_s"] for s in stats),
        "edge_cloud": {
            "latency_s": statistics.fmean(lat for lat, _ in ec),
            "api_cost_usd": statistics.fmean(cost for _, cost in ec),
        },
    }


def _counts(items: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for item in items:
        out[item] += 1
    return dict(sorted(out.items()))


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None
