"""Greedy against the paper's decoding (temperature 0.6, top-p 0.95) on the same problems: does sampling
change what the SRM's confidence (r_s) says? Prints two Markdown tables: TrigReason's behaviour under
each decoding, and TrigReason against its matched random baseline under each.

    uv run --frozen --no-sync python docs/results/gsm8k-local/sampling.py
"""

from __future__ import annotations

from pathlib import Path

from trigreason.eval import Row, matched_comparison, read_rows, replaced_share

HERE = Path(__file__).resolve().parent
_DECODINGS = {
    "greedy": HERE / "results.jsonl",
    "temperature 0.6, top-p 0.95": HERE / "sampled" / "results.jsonl",
}


def _rows(path: Path) -> dict[tuple[str, str], Row]:
    return {
        (r.policy, r.problem_id): r
        for r in read_rows(path)
        if r.policy in ("trigreason", "random", "lrm-only", "srm-only")
    }


def _behaviour(name: str, rows: list[Row]) -> str:
    n = len(rows)
    stats = [r.stats for r in rows]
    srm = sum(s.srm_tokens for s in stats)
    lrm = sum(s.lrm_tokens for s in stats)
    calls = sum(s.srm_calls for s in stats)
    trig = {k: sum(s.triggers.get(k, 0) for s in stats) for k in ("offload", "intervention")}
    return (
        f"| {name} | {n} | {sum(r.correct for r in rows) / n:.2f} | {srm / (srm + lrm):.3f} | "
        f"{calls / n:.1f} | {trig['offload']} ({trig['offload'] / calls:.0%} of SRM calls) | "
        f"{trig['intervention']} | {replaced_share(stats):.2f} |"
    )


def _versus(name: str, rows: list[Row]) -> str:
    v = matched_comparison(rows)
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
    runs = {name: _rows(path) for name, path in _DECODINGS.items()}
    # Only the problems every decoding finished under TrigReason, so the rows compare like with like.
    common = sorted(set.intersection(*({p for pol, p in r if pol == "trigreason"} for r in runs.values())))
    print("| decoding | problems | accuracy | SRM token ratio | SRM calls / run | offload fired | "
          "intervention fired | replaced share |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        print(_behaviour(name, [rows["trigreason", p] for p in common]))
    greedy, sampled = runs.values()
    agree = sum(greedy["trigreason", p].correct == sampled["trigreason", p].correct for p in common)
    print()
    for ref in ("lrm-only", "srm-only"):
        if all((ref, p) in greedy for p in common):
            right = sum(greedy[ref, p].correct for p in common)
            print(f"{ref}, greedy, on the same problems: {right / len(common):.2f}")
    print(f"\nSame TrigReason outcome (both right or both wrong) on {agree} of {len(common)} problems.\n")
    print("| decoding | pairs | TrigReason | random, matched | TR right & random wrong / opposite | "
          "difference [exact 95%] | exact McNemar p | verdict at 0.05 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        print(_versus(name, [rows[key] for key in rows if key[1] in common]))


if __name__ == "__main__":
    main()
