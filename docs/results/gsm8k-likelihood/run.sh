#!/usr/bin/env bash
# The likelihood policy against chance on the default local pair (Qwen2.5-Coder 0.5B SRM / 1.5B LRM, CPU),
# greedy. NOT RUN YET (see README.md): these are the commands to run.
#  1. choose the statistic and threshold on GSM8K *train* (16 problems, as TrigReason's calibration): each
#     point is one eval run; pick the point with the most SRM tokens whose accuracy stays within 0.9 of
#     LRM-only (calibrate's rule; calibrate itself sweeps TrigReason's rho only);
#  2. evaluate it and the random baseline at its own replaced share (--matched-to likelihood) on the first
#     100 GSM8K *test* problems: summary.json's vs_random.likelihood has both accuracies, the paired
#     counts, the exact interval and the exact McNemar p;
#  3. only if it beats chance there: the same at the paper's decoding (temperature 0.6, top-p 0.95).
# Every step resumes from what its directory already holds.
set -euo pipefail
cd "$(dirname "$0")/../../.."
HERE=docs/results/gsm8k-likelihood
PROFILE=trigreason/profiles/local-qwen-coder.json   # priming_steps 2, as TrigReason's evaluation
THRESHOLD=${THRESHOLD:--1.0}
STATISTIC=${STATISTIC:-mean}
for stat_thr in mean:-0.5 mean:-1.0 mean:-1.5 window_min:-2.0 window_min:-3.0 low_share:0.2 low_share:0.4; do
  uv run --frozen --no-sync trigreason eval --dataset gsm8k-train --limit 16 --policies likelihood \
    --statistic "${stat_thr%%:*}" --threshold "${stat_thr#*:}" --profile "$PROFILE" \
    --out "$HERE/train/${stat_thr%%:*}_${stat_thr#*:}" --temperature 0 --max-tokens 512
done
uv run --frozen --no-sync trigreason eval --dataset gsm8k --limit 100 --policies likelihood \
  --statistic "$STATISTIC" --threshold "$THRESHOLD" --matched-random --matched-to likelihood \
  --profile "$PROFILE" --out "$HERE" --temperature 0 --max-tokens 512
