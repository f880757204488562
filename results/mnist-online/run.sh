#!/usr/bin/env bash
# Online learning on MNIST (issue 6): batch size 1, one pass over the 60,000 training images in
# the same order for every model, Adam lr 3e-4, test error on the first 2,000 test images after
# 0, 100, 300, 1000, 3000, 10000, 30000 and 60000 examples (S = 20 for the NSM).
# Measured on the project's 2-core CPU machine (torch 2.13.0+cpu, one thread): 15 min in all.
set -euo pipefail
nsm online bnsm,dcnn,dcnn-wn,dcnn-bn --examples 60000 --samples 20 --test-subset 2000 --threads 1 \
    --out results/mnist-online --no-progress
