#!/usr/bin/env bash
# The exact commands behind docs/results/gsm8k-local: calibrate TrigReason's thresholds for the default
# local pair (Qwen2.5-Coder 0.5B as SRM, 1.5B as LRM, CPU) on GSM8K *train*, then evaluate all four
# policies on the first 100 GSM8K *test* problems with the calibrated profile. Both steps resume from what
# their directories already hold. About 2 hours on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../../.."
HERE=docs/results/gsm8k-local
COMMON=(--temperature 0 --max-tokens 512)
uv run --frozen --no-sync trigreason calibrate --dataset gsm8k-train --limit 16 \
  --priming-steps 2 --rho 0.5,0.7,0.85,0.95 --min-accuracy 0.9 \
  --name local-qwen-coder --profile-out trigreason/profiles/local-qwen-coder.json \
  --out "$HERE/calibration" "${COMMON[@]}"
uv run --frozen --no-sync trigreason eval --dataset gsm8k --limit 100 \
  --policies trigreason,specreason,lrm-only,srm-only \
  --profile trigreason/profiles/local-qwen-coder.json --out "$HERE" "${COMMON[@]}"
