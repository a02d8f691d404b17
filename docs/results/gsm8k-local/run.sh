#!/usr/bin/env bash
# The exact commands behind docs/results/gsm8k-local, for the default local pair (Qwen2.5-Coder 0.5B as
# SRM, 1.5B as LRM, CPU):
#  1. calibrate TrigReason's thresholds on GSM8K *train*: the grid over rho (priming_steps 2), the random
#     baseline at three offload_p values, LRM-only and SRM-only; the Pareto front and the chosen point's
#     (descriptive) margin over random go into the profile, calibration/pareto.png and report.html;
#  2. evaluate all four policies and the matched random baseline on the first 100 GSM8K *test* problems
#     with the calibrated profile, greedy;
#  3. TrigReason and its matched random baseline once more on the first 60 at the paper's decoding
#     (temperature 0.6, top-p 0.95, one sample each), in sampled/: does sampling change the r_s signal?
# Every step resumes from what its directory already holds. About 4 hours on 2 CPU cores from scratch.
# With every run stored, add --report-only to each command to rebuild the summaries, the profile and the
# reports (new verdict rules, say) without a model.
set -euo pipefail
cd "$(dirname "$0")/../../.."
HERE=docs/results/gsm8k-local
PROFILE=trigreason/profiles/local-qwen-coder.json
uv run --frozen --no-sync trigreason calibrate --dataset gsm8k-train --limit 16 \
  --priming-steps 2 --rho 0.5,0.7,0.85,0.95 --random-p 0.25,0.5,0.75 --min-accuracy 0.9 \
  --name local-qwen-coder --profile-out "$PROFILE" --out "$HERE/calibration" --temperature 0 --max-tokens 512
uv run --frozen --no-sync trigreason eval --dataset gsm8k --limit 100 \
  --policies trigreason,specreason,lrm-only,srm-only --matched-random \
  --profile "$PROFILE" --out "$HERE" --temperature 0 --max-tokens 512
uv run --frozen --no-sync trigreason eval --dataset gsm8k --limit 60 --policies trigreason \
  --matched-random --profile "$PROFILE" --out "$HERE/sampled" --temperature 0.6 --top-p 0.95 --max-tokens 512
