#!/usr/bin/env bash
# A GPU window in two calls. The steps: CONTRIBUTING.md; the logic: scripts/gpu_window.py.
#
#   bash scripts/gpu_window.sh A      # carry .gpu1: environment, GPU checks, step benchmark (~4 min)
#   bash scripts/gpu_window.sh B      # carry .gpu2, the moment A returns: train and package the runs
#   GPU_WINDOW_DRY=1 OUT=/tmp/w-A bash scripts/gpu_window.sh A    # the same on a CPU, tiny sizes
#
# Everything the call prints also goes to $OUT/window-A.log (or -B): it comes back even after a timeout.
set -uo pipefail
call=${1:?usage: bash scripts/gpu_window.sh A|B}
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that comes back (the device sets it; choose one in dry mode)}"
mkdir -p "$OUT"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 scripts/gpu_window.py "$call" 2>&1 | tee "$OUT/window-$call.log"
