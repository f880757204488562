#!/usr/bin/env bash
# Issue 13's Fashion-MNIST hypothesis: do the NSMs trail the dCNN because their input is
# binarized to sgn(2x - 1)? bnsm-real is the same bNSM whose first layer reads the grey
# levels 2x - 1 (variance exact). Same budget as results/fashion-mnist-small (3 epochs,
# S = 20, every epoch evaluated), three seeds, beside the dCNN and the binarized bNSM.
# Usage (from the repository root): results/fashion-mnist-real/run.sh OUT_DIR
set -euo pipefail
OUT=${1:?usage: run.sh OUT_DIR}
nsm reproduce fashion-mnist --models dcnn,bnsm,bnsm-real --seeds 3 --epochs 3 --samples 20 \
    --threads 1 --no-progress --out "$OUT"
cp "$OUT/table.md" "$OUT/table.csv" results/fashion-mnist-real/
