#!/usr/bin/env bash
# The GPU check, in one command: the CUDA checks of benchmarks/gpu_check.py, then the speed
# benchmark at batch 100 and 1000, and a one-screen summary. Each step has a time limit (240 s
# for the checks, 150 s for each speed run: at most 9 minutes in all, plus start-up); how long
# the steps take on a GPU has not been measured. Python runs unbuffered, so a step stopped at
# its limit leaves what it had printed. The exit status is 0 only if every step exited 0 (a
# failed check, a failed or timed-out run: 1). Uses the python on PATH, which must have a CUDA
# build of torch; nsm is taken from src/ (no install needed). Writes everything to
# ${OUT:-gpu-check}/.
# Usage (from the repository root): bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
status=0
steps=()
step() {  # step NAME EXIT-CODE: remember it; any non-zero code fails the whole check
  local why=""
  [ "$2" -eq 124 ] && why=" (timed out)"
  steps+=("$1: exit $2$why")
  [ "$2" -eq 0 ] || status=1
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
python -u -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" \
    | tee "$OUT/torch.txt"
step "torch" $?
timeout 240 python -u benchmarks/gpu_check.py --device cuda > "$OUT/checks.txt" 2>&1
step "checks" $?
for b in 100 1000; do
  timeout 150 python -u benchmarks/bench_speed.py --device cuda --batch "$b" --repeats 15 --fresh-cache \
      --json "$OUT/speed-$b.json" > "$OUT/speed-$b.txt" 2>&1
  step "speed, batch $b" $?
done
{
  echo "== GPU"; cat "$OUT/gpu.txt" "$OUT/torch.txt"
  echo "== steps"; printf '%s\n' "${steps[@]}"
  echo "== checks"; grep -E "^(PASS|FAIL|gpu_check:)|passed" "$OUT/checks.txt"
  for b in 100 1000; do echo "== speed, batch $b"; grep -vE "^\s*$|Warning" "$OUT/speed-$b.txt"; done
  echo "== exit $status"
} | tee "$OUT/summary.txt"
exit $status
