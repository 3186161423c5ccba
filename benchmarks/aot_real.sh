#!/usr/bin/env bash
# Zero warm-up at real size for each model given (default: all three): export the package, check it against
# upstream eager through the users' entry point (verify --aot), then bench it: load and first forecast in a
# fresh process, and the traffic profile for upstream eager, the package and patched torch.compile
# (bench --aot --traffic).  Writes reports/MODEL.real.{export,aot,bench-aot}.json.  Slow on a CPU.
#   benchmarks/aot_real.sh [chronos2 toto kronos] [--calls N] [--no-export]
set -euo pipefail
cd "$(dirname "$0")/.."
calls=8
export_it=1
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) calls="$2"; shift 2 ;;
    --no-export) export_it=0; shift ;;
    *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -eq 0 ] && models=(chronos2 toto kronos)
pk=.venv/bin/patchkit
mkdir -p reports dist
.venv/bin/python -c "import torch, platform, os; print(f'torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, cuda {torch.cuda.is_available()}')"
for m in "${models[@]}"; do
  start=$(date +%s)
  pkg="dist/$m-real-cpu.pt2"
  if [ "$export_it" = 1 ]; then
    $pk export "$m" --size real --out "$pkg" --json "reports/$m.real.export.json"
    $pk verify "$m" --aot "$pkg" --calls "$calls" --json "reports/$m.real.aot.json" || rc=$?
  fi
  $pk bench "$m" --aot "$pkg" --traffic --calls "$calls" --json "reports/$m.real.bench-aot.json" \
    --markdown "reports/$m.real.bench-aot.md"
  echo "$m: $(( $(date +%s) - start )) s wall"
done
exit "${rc:-0}"
