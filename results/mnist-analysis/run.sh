#!/usr/bin/env bash
# The runs behind results/mnist-analysis (issue 5): weight statistics, gradient agreement,
# last-hidden-layer percentiles and the convergence comparison, on full MNIST.
# Usage: results/mnist-analysis/run.sh OUT_DIR   (from the repository root)
set -euo pipefail
OUT=${1:?usage: run.sh OUT_DIR}
fc="--epochs 30 --samples 20 --no-progress --out $OUT --record --record-every 100"
conv="--epochs 10 --samples 20 --no-progress --out $OUT"
# SI 4.5: the 784-300-300-300 networks (W3 figure, percentiles), NSM beside StNN
nsm train --model bnsm-fc $fc
nsm train --model stnn-fc $fc
# SI 4.11: the Table 6 network, NSM / NSM-BinConcrete / deterministic sigmoid, gradient cosines
nsm train --model bnsm $conv --record --record-every 100 --compare-grad bnsm-binconcrete,sigmoid
nsm train --model bnsm-binconcrete $conv --record --record-every 100
nsm train --model sigmoid $conv --record --record-every 100
nsm train --model stnn $conv --record --record-every 100
# convergence: the deterministic networks with and without weight / batch normalization
for m in dcnn dcnn-wn dcnn-bn sigmoid-wn sigmoid-bn; do nsm train --model $m $conv; done
# the same bnsm training again (bit-identical: recording forks its own generator), recorded every
# 200 steps with 8 draws per gradient and bnsm itself as a companion (the noise floor)
nsm train --model bnsm $conv --run-name bnsm-cos --record --record-every 200 --record-draws 8 \
    --compare-grad bnsm-binconcrete,sigmoid,bnsm
nsm train --model dcnn-mcdropout $conv
# the figures in this folder
nsm analyze $OUT/bnsm-fc-mnist-seed0 $OUT/stnn-fc-mnist-seed0 --out results/mnist-analysis/si45
nsm analyze $OUT/bnsm-cos $OUT/bnsm-binconcrete-mnist-seed0 $OUT/sigmoid-mnist-seed0 $OUT/stnn-mnist-seed0 \
    --out results/mnist-analysis/si411
nsm analyze $OUT/bnsm-mnist-seed0 $OUT/dcnn-mnist-seed0 $OUT/dcnn-wn-mnist-seed0 $OUT/dcnn-bn-mnist-seed0 \
    $OUT/sigmoid-mnist-seed0 $OUT/sigmoid-wn-mnist-seed0 $OUT/sigmoid-bn-mnist-seed0 \
    $OUT/dcnn-mcdropout-mnist-seed0 --out results/mnist-analysis/convergence
