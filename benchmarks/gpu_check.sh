#!/usr/bin/env bash
# The GPU check, in one command (under 8 minutes on one GPU): the CUDA checks of
# benchmarks/gpu_check.py, then the speed benchmark at batch 100 and 1000, and a one-screen
# summary. Uses the python on PATH, which must have a CUDA build of torch; nsm is taken from
# src/ (no install needed). Writes everything to ${OUT:-gpu-check}/.
# Usage (from the repository root): bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" \
    | tee "$OUT/torch.txt"
timeout 240 python benchmarks/gpu_check.py --device cuda > "$OUT/checks.txt" 2>&1
checks=$?
for b in 100 1000; do
  timeout 150 python benchmarks/bench_speed.py --device cuda --batch "$b" --repeats 15 \
      --json "$OUT/speed-$b.json" > "$OUT/speed-$b.txt" 2>&1
done
{
  echo "== GPU"; cat "$OUT/gpu.txt" "$OUT/torch.txt"
  echo "== checks (exit $checks)"; grep -E "^(PASS|FAIL)|passed" "$OUT/checks.txt"
  for b in 100 1000; do echo "== speed, batch $b"; grep -vE "^\s*$|Warning" "$OUT/speed-$b.txt"; done
} | tee "$OUT/summary.txt"
exit $checks
