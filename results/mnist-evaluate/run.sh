#!/usr/bin/env bash
# Uncertainty, rotation, OOD and device robustness on MNIST (issue 6), of four runs trained by
# results/mnist-analysis/run.sh (Table 6 network, 10 epochs, seed 0): the bNSM (bnsm-cos), the
# StNN, the deterministic dCNN and the dCNN with MC dropout.
# Usage: results/mnist-evaluate/run.sh RUNS_DIR   (the OUT_DIR given to mnist-analysis/run.sh)
# Measured on the project's 2-core CPU machine (torch 2.13.0+cpu): 23 min 37 s for the four runs.
set -euo pipefail
R=${1:?usage: run.sh RUNS_DIR}
nsm evaluate $R/bnsm-cos $R/stnn-mnist-seed0 $R/dcnn-mnist-seed0 $R/dcnn-mcdropout-mnist-seed0 \
    --out results/mnist-evaluate --samples 100
