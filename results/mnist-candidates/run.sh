#!/usr/bin/env bash
# Issue 13's candidate reasons, one change at a time, at a budget a 2-core CPU affords (see
# README.md here, written before any of these runs): the paper's MNIST protocol (Adam 3e-4,
# batch 100, weight decay 1e-6) cut to 10 epochs; epoch 5 evaluated at S = 10 for the curve,
# epochs 8-10 at S = 20, the reported error their mean; seeds 0, 1, 2 of dcnn, bnsm,
# bnsm-unitbias, bnsm-wide, dcnn-wide and bnsm-binconcrete. One thread per worker, a checkpoint
# every 200 steps: run it again to resume.
# Usage (from the repository root): results/mnist-candidates/run.sh [WORKERS]
set -euo pipefail
WORKERS=${1:-1}
OUT=results/mnist-candidates
protocol="--epochs 10 --eval-every 5 --eval-samples 10 --eval-last 3 --samples 20 --threads 1 \
  --checkpoint-every 200 --compile off --no-progress --out $OUT"
worker() {
  for seed in 0 1 2; do
    nsm reproduce mnist-candidates --seed-list "$seed" $protocol
  done
}
for _ in $(seq "$WORKERS"); do worker & sleep 5; done
wait
# the table of all three seeds, from the finished runs
nsm reproduce mnist-candidates --seed-list 0,1,2 $protocol --table-only
