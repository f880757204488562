#!/usr/bin/env bash
# The dCNN as the authors' released MNIST script trains it (issue 13, "the dCNN baseline"):
# a 150-unit fc layer (dcnn-150), no weight decay, a constant learning rate; everything else as
# results/mnist-paper/run.sh (Adam 3e-4, batch 100, 100 epochs, the same evaluation schedule:
# every 10 epochs and each of the last 5; the dCNN is deterministic, so every evaluation is one
# pass and the reported error is the mean of epochs 96-100).
# Usage (from the repository root): results/mnist-authors-dcnn/run.sh [SEEDS] [MODELS]
# e.g. results/mnist-authors-dcnn/run.sh 0,1,2 dcnn-150,dcnn
set -euo pipefail
SEEDS=${1:-0}
MODELS=${2:-dcnn-150}
nsm reproduce mnist-authors-dcnn --models "$MODELS" --seed-list "$SEEDS" --eval-every 10 --eval-samples 10 \
  --eval-last 5 --samples 100 --epochs 100 --threads 1 --checkpoint-every 200 --compile off --no-progress \
  --out results/mnist-authors-dcnn
