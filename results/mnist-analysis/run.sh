#!/usr/bin/env bash
# The runs behind results/mnist-analysis (issue 5): weight statistics, gradient agreement,
# last-hidden-layer percentiles and the convergence comparison, on full MNIST.
# Usage: results/mnist-analysis/run.sh OUT_DIR   (then: nsm analyze OUT_DIR/* --out FIGURES)
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
