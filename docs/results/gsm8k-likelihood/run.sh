#!/usr/bin/env bash
# The likelihood policy against chance on the default local pair (Qwen2.5-Coder 0.5B SRM / 1.5B LRM, CPU),
# greedy, TrigReason's priming (2 LRM steps, the profile's), offload off (rho 1: the LRM's view decides).
# Every step resumes from what its directory already holds.
#  1. the threshold, on GSM8K *train* only: probe.py scores every step of the stored SRM-only train runs
#     (docs/results/gsm8k-local/calibration/srm-only) with the LRM as the policy does, and prints each
#     statistic's deciles (probe.json). Chosen from it, before any test problem was run: the mean
#     log-probability, replacing a step below -0.5 (37% of those train steps);
#  2. the verdict: that point and the random baseline at its own replaced share (--matched-to likelihood)
#     on the first 100 GSM8K *test* problems: summary.json's vs_random.likelihood has both accuracies,
#     the paired counts, the exact 95% interval and the exact McNemar p;
#  3. the Pareto plot on train (calibrate): the likelihood policy at thresholds -0.3 and -0.5 (deciles 7
#     and 4 of probe.json's mean; two points, for the machine's time) beside the random baseline and the
#     end points already run for TrigReason's calibration on the same 16 problems (copied, not re-run),
#     and TrigReason's own grid from that calibration (--beside);
#  4. because it beat chance in 2: the same at the paper's decoding (temperature 0.6, top-p 0.95) on the
#     first 60 test problems, as TrigReason's sampled run (docs/results/gsm8k-local/sampled), in sampled/.
set -euo pipefail
cd "$(dirname "$0")/../../.."
HERE=docs/results/gsm8k-likelihood
PROFILE=trigreason/profiles/local-qwen-coder.json   # priming_steps 2, as TrigReason's evaluation
RUN="uv run --frozen --no-sync"
STEP=${1:-all}

if [[ $STEP == all || $STEP == probe ]]; then
  $RUN trigreason serve tgi-cpu --model lrm --port 18081 & server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  until curl -sf localhost:18081/health >/dev/null; do sleep 1; done
  $RUN python $HERE/probe.py --lrm-url http://127.0.0.1:18081
  kill $server; wait $server 2>/dev/null || true; trap - EXIT
fi

if [[ $STEP == all || $STEP == test ]]; then
  $RUN trigreason eval --dataset gsm8k --limit 100 --policies likelihood --statistic mean --threshold -0.5 \
    --rho 1.0 --matched-random --matched-to likelihood --profile "$PROFILE" --out "$HERE" \
    --temperature 0 --max-tokens 512
fi

if [[ $STEP == all || $STEP == pareto ]]; then
  mkdir -p "$HERE/calibration"
  for d in lrm-only srm-only random-offload_p0.25 random-offload_p0.5 random-offload_p0.75; do
    [[ -e $HERE/calibration/$d ]] || cp -r "docs/results/gsm8k-local/calibration/$d" "$HERE/calibration/$d"
  done
  $RUN trigreason calibrate --dataset gsm8k-train --limit 16 --policy likelihood \
    --grid threshold=-0.3,-0.5 --grid rho=1.0 --random-p 0.25,0.5,0.75 --profile "$PROFILE" \
    --beside docs/results/gsm8k-local/calibration/calibration.json \
    --out "$HERE/calibration" --temperature 0 --max-tokens 512
fi

if [[ $STEP == all || $STEP == sampled ]]; then
  $RUN trigreason eval --dataset gsm8k --limit 60 --policies likelihood --statistic mean --threshold -0.5 \
    --rho 1.0 --matched-random --matched-to likelihood --profile "$PROFILE" --out "$HERE/sampled" \
    --temperature 0.6 --top-p 0.95 --max-tokens 512
fi
