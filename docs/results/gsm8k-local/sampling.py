"""Greedy against the paper's decoding (temperature 0.6, top-p 0.95) on the same problems: does sampling
change what a policy's signal says? Prints two Markdown tables: the policy's behaviour under each
decoding, and the policy against its matched random baseline under each. DIR holds the greedy run
(results.jsonl) and the sampled one (sampled/results.jsonl).

    uv run --frozen --no-sync python docs/results/gsm8k-local/sampling.py      # TrigReason, this directory
    uv run --frozen --no-sync python docs/results/gsm8k-local/sampling.py \
        --dir docs/results/gsm8k-likelihood --policy likelihood
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trigreason.eval import Row, matched_comparison, read_rows, replaced_share

HERE = Path(__file__).resolve().parent
_DECODINGS = {"greedy": "results.jsonl", "temperature 0.6, top-p 0.95": "sampled/results.jsonl"}


def _rows(path: Path, policy: str) -> dict[tuple[str, str], Row]:
    return {
        (r.policy, r.problem_id): r
        for r in read_rows(path)
        if r.policy in (policy, "random", "lrm-only", "srm-only")
    }


def _kinds(policy: str) -> tuple[str, ...]:
    # The triggers that replace an SRM step under this policy, as columns (TrigReason's two as before).
    return ("offload", "intervention") if policy == "trigreason" else ("unlikely", "offload", "intervention")


def _behaviour(name: str, rows: list[Row], kinds: tuple[str, ...]) -> str:
    n = len(rows)
    stats = [r.stats for r in rows]
    srm = sum(s.srm_tokens for s in stats)
    lrm = sum(s.lrm_tokens for s in stats)
    calls = sum(s.srm_calls for s in stats)
    fired = [sum(s.triggers.get(k, 0) for s in stats) for k in kinds]
    first = f"{fired[0]} ({fired[0] / calls:.0%} of SRM calls)" if calls else str(fired[0])
    return (
        f"| {name} | {n} | {sum(r.correct for r in rows) / n:.2f} | {srm / (srm + lrm):.3f} | "
        f"{calls / n:.1f} | {' | '.join([first, *map(str, fired[1:])])} | {replaced_share(stats):.2f} |"
    )


def _versus(name: str, rows: list[Row], policy: str) -> str:
    v = matched_comparison(rows, policy)
    if v is None:
        return f"| {name} | no matched random runs yet | | | | | | |"
    low, high = v.accuracy_difference_ci95
    need = v.discordant_pairs_needed
    verdict = v.verdict.split(" (")[0]  # the sentence without its counts, which the other columns hold
    if not v.significant and need is not None:
        verdict += f"; {need:,} discordant pairs at this split would show one"
    return (
        f"| {name} | {v.pairs} | {v.policy_accuracy:.3f} | {v.random_accuracy:.3f} | "
        f"{v.policy_right_random_wrong} / {v.random_right_policy_wrong} | "
        f"{v.accuracy_difference:+.3f} [{low:+.3f}, {high:+.3f}] | {v.mcnemar_p:.2g} | {verdict} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=HERE, help="greedy results.jsonl, sampled/ beside it")
    parser.add_argument("--policy", default="trigreason", help="the policy matched with random")
    args = parser.parse_args()
    policy: str = args.policy
    who = "TrigReason" if policy == "trigreason" else policy
    kinds = _kinds(policy)
    runs = {name: _rows(args.dir / path, policy) for name, path in _DECODINGS.items()}
    # Only the problems every decoding finished under the policy, so the rows compare like with like.
    common = sorted(set.intersection(*({p for pol, p in r if pol == policy} for r in runs.values())))
    print("| decoding | problems | accuracy | SRM token ratio | SRM calls / run | "
          + " | ".join(f"{k} fired" for k in kinds) + " | replaced share |")  # fmt: skip
    print("|---|---|---|---|---|" + "---|" * len(kinds) + "---|")
    for name, rows in runs.items():
        print(_behaviour(name, [rows[policy, p] for p in common], kinds))
    greedy, sampled = runs.values()
    agree = sum(greedy[policy, p].correct == sampled[policy, p].correct for p in common)
    print()
    for ref in ("lrm-only", "srm-only"):
        if all((ref, p) in greedy for p in common):
            right = sum(greedy[ref, p].correct for p in common)
            print(f"{ref}, greedy, on the same problems: {right / len(common):.2f}")
    print(f"\nSame {who} outcome (both right or both wrong) on {agree} of {len(common)} problems.\n")
    print(f"| decoding | pairs | {who} | random, matched | {who} right & random wrong / opposite | "
          "difference [exact 95%] | exact McNemar p | verdict at 0.05 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        print(_versus(name, [rows[key] for key in rows if key[1] in common], policy))


if __name__ == "__main__":
    main()
