#!/usr/bin/env bash
# One GPU session, start to finish: check the GPU paths, benchmark them, then run the reference table.
#
#   bash benchmarks/gpu_session.sh cifar10.npz [OUT]      # OUT: default $OUT, else gpu-out/
#
# Writes at most 6 files under OUT: gpu_check.log, bench.json, bench.log, reproduce.log, results.tgz
# (the run records, for data/results/), and the teacher's checkpoint is left in OUT/run/checkpoints/.
# Stops at the first failure: a failed GPU check means the numbers after it would not be trustworthy.
set -euo pipefail
data=${1:?usage: bash benchmarks/gpu_session.sh CIFAR10.npz [OUT]}
out=${2:-${OUT:-gpu-out}}
mkdir -p "$out"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi") | tee "$out/gpu_check.log"
python benchmarks/gpu_check.py 2>&1 | tee -a "$out/gpu_check.log"
python benchmarks/bench_step.py --device cuda --data "$data" --compile --out "$out/bench.json" 2>&1 \
    | tee "$out/bench.log"
start=$(date +%s)
python -m dkdlib reproduce --seeds 0 1 2 --graph --cache-teacher --packed --data "$data" \
    --out-dir "$out/run" --no-progress 2>&1 | tee "$out/reproduce.log"
echo "reproduce: $(( $(date +%s) - start )) s wall" | tee -a "$out/reproduce.log"
tar czf "$out/results.tgz" -C "$out/run" results
