#!/usr/bin/env bash
# Zero warm-up at real size for each model given (default: all three): export the package, check it against
# upstream eager through the users' entry point (verify --aot), then time loading and forecasting in fresh
# processes (bench_aot.py).  Writes reports/MODEL.real.{export,aot,bench-aot}.json.  Slow on a CPU.
#   benchmarks/aot_real.sh [chronos2 toto kronos] [--calls N]
set -euo pipefail
cd "$(dirname "$0")/.."
calls=8
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) calls="$2"; shift 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -eq 0 ] && models=(chronos2 toto kronos)
pk=.venv/bin/patchkit
mkdir -p reports dist
.venv/bin/python -c "import torch, platform, os; print(f'torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, cuda {torch.cuda.is_available()}')"
for m in "${models[@]}"; do
  start=$(date +%s)
  $pk export "$m" --size real --out "dist/$m-real-cpu.pt2" --json "reports/$m.real.export.json"
  $pk verify "$m" --aot "dist/$m-real-cpu.pt2" --calls "$calls" --json "reports/$m.real.aot.json" || rc=$?
  .venv/bin/python benchmarks/bench_aot.py "$m" --package "dist/$m-real-cpu.pt2" --calls "$calls" \
    --json "reports/$m.real.bench-aot.json"
  echo "$m: $(( $(date +%s) - start )) s wall"
done
exit "${rc:-0}"
