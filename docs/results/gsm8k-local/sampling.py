"""Greedy against the paper's decoding (temperature 0.6, top-p 0.95), TrigReason on the same problems: does
sampling change what the SRM's confidence (r_s) says? Prints a Markdown table.

    python docs/results/gsm8k-local/sampling.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPLACING = ("offload", "intervention", "judge_reject", "random")


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {r["problem_id"]: r for r in rows if r["policy"] == "trigreason"}


def _line(name: str, rows: list[dict[str, Any]]) -> str:
    n = len(rows)
    stats = [r["stats"] for r in rows]
    srm = sum(s["srm_tokens"] for s in stats)
    lrm = sum(s["lrm_tokens"] for s in stats)
    calls = sum(s["srm_calls"] for s in stats)
    trig = {k: sum(s["triggers"].get(k, 0) for s in stats) for k in ("offload", "intervention")}
    replaced = sum(s["triggers"].get(k, 0) for s in stats for k in REPLACING)
    kept = sum(s["srm_steps"] for s in stats)
    return (
        f"| {name} | {n} | {sum(bool(r['correct']) for r in rows) / n:.2f} | {srm / (srm + lrm):.3f} | "
        f"{calls / n:.1f} | {trig['offload']} ({trig['offload'] / calls:.0%} of SRM steps) | "
        f"{trig['intervention']} | {replaced / (replaced + kept):.2f} |"
    )


def main() -> None:
    greedy = _rows(HERE / "results.jsonl")
    sampled = _rows(HERE / "sampled" / "results.jsonl")
    both = [p for p in sampled if p in greedy]
    print("| decoding | problems | accuracy | SRM token ratio | SRM steps written / run | offload fired | "
          "intervention fired | replaced share |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print(_line("greedy", [greedy[p] for p in both]))
    print(_line("temperature 0.6, top-p 0.95", [sampled[p] for p in both]))
    agree = sum(bool(greedy[p]["correct"]) == bool(sampled[p]["correct"]) for p in both)
    print(f"\nSame outcome (both right or both wrong) on {agree} of {len(both)} problems.")


if __name__ == "__main__":
    main()
