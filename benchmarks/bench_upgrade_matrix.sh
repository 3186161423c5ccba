#!/usr/bin/env bash
# Wall time of a whole upgrade matrix (every published version: fetch, dry run,
# verify with the eager analysis backend and inductor-compiled forecasts).
#   benchmarks/bench_upgrade_matrix.sh chronos2 [--markdown FILE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-chronos2}"; shift || true
.venv/bin/python -c "import torch, platform; print(f'torch {torch.__version__}, {platform.machine()}, {__import__(\"os\").cpu_count()} cores')"
start=$(date +%s.%N)
.venv/bin/patchkit upgrade-check "$model" --matrix --json "/tmp/$model-matrix.json" "$@" >/dev/null || rc=$?
end=$(date +%s.%N)
printf '%s matrix: %.0f s wall (exit %s)\n' "$model" "$(echo "$end - $start" | bc)" "${rc:-0}"
