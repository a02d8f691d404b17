"""The LRM's view of SRM steps on GSM8K train, before choosing thresholds: each step of the stored SRM-only
calibration runs (docs/results/gsm8k-local/calibration/srm-only, the same 16 train problems) is scored by the
LRM exactly as the likelihood policy scores it (the committed steps so far as the prompt, the step as the
continuation), and the three statistics' quantiles are printed, with the share of steps each threshold of
the sweep would replace. Train data only; the test split is never read.

    uv run --frozen --no-sync trigreason serve tgi-cpu --model lrm --port 8081 &
    uv run --frozen --no-sync python docs/results/gsm8k-likelihood/probe.py --lrm-url http://127.0.0.1:8081

Writes probe.json beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path

from trigreason.services.orchestrator import render_generation_prompt
from trigreason.services.trigger_evaluator.policies import Statistic, likelihood_statistic
from trigreason.services.worker.backends import TgiBackend

HERE = Path(__file__).parent
RUNS = HERE.parent / "gsm8k-local/calibration/srm-only/results.jsonl"
SWEEP: dict[Statistic, list[float]] = {
    "mean": [-0.5, -1.0, -1.5],
    "window_min": [-2.0, -3.0],
    "low_share": [0.2, 0.4],
}


async def score_all(url: str) -> list[dict[Statistic, float | None]]:
    backend = TgiBackend(url)
    out: list[dict[Statistic, float | None]] = []
    rows = [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]
    try:
        for n, row in enumerate(rows, 1):
            texts = [s["text"] for s in row["steps"]]
            for i, text in enumerate(texts):
                if not text:
                    continue
                head = render_generation_prompt("chatml", row["question"], texts[:i])
                scored = await backend.score(head, text)
                lps = [t.logprob for t in scored.tokens]
                out.append({s: likelihood_statistic(lps, statistic=s) for s in SWEEP})
            print(f"[{n}/{len(rows)}] {row['problem_id']}: {len(out)} steps scored", flush=True)
    finally:
        await backend.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--lrm-url", required=True, help="a TGI-protocol server with the LRM")
    args = ap.parse_args()
    steps = asyncio.run(score_all(args.lrm_url))
    per_statistic: dict[str, object] = {}
    for s, thresholds in SWEEP.items():
        vals = sorted(v for v in (st[s] for st in steps) if v is not None)
        qs = statistics.quantiles(vals, n=10) if len(vals) > 1 else vals
        replaced = {
            str(t): sum(1 for v in vals if (v > t if s == "low_share" else v < t)) / len(vals)
            for t in thresholds
        }
        per_statistic[s] = {"deciles": [round(q, 3) for q in qs], "replaced_share": replaced}
        print(f"{s:>10}: deciles {', '.join(f'{q:.2f}' for q in qs)}; replaced share {replaced}")
    report = {"steps": len(steps), "statistics": per_statistic}
    (HERE / "probe.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
