#!/usr/bin/env bash
# Real-size checks on a CUDA machine: every model's traffic profile through the upstream's own
# entry point, patched tree compiled with inductor in MODE (default: reduce-overhead, i.e. CUDA
# graphs), upstream analysed with Dynamo's eager backend.
#   benchmarks/gpu_real.sh [OUTDIR] [MODE] [CALLS] [MODELS]
# Needs: vendored + applied trees (patchkit vendor/apply MODEL), a CUDA torch.  Writes, per model,
# OUTDIR/MODEL.MODE.json (verify's JSON) and OUTDIR/MODEL.MODE.txt (its report).  The models run
# one after another unless PARALLEL=1 (then latencies are taken with the GPU shared: say so).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-reports/gpu}"; mode="${2:-reduce-overhead}"; calls="${3:-24}"; models="${4:-kronos chronos2 toto}"
pk="${PATCHKIT:-.venv/bin/patchkit}"
py="${PYTHON:-.venv/bin/python}"
mkdir -p "$out"
"$py" - <<'EOF' | tee "$out/env.txt"
import os, platform, torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"torch {torch.__version__}, cuda {torch.version.cuda}, {name}, {platform.machine()}, {os.cpu_count()} cores")
EOF
run() {
  local m="$1" t0 rc
  t0=$(date +%s)
  "$pk" verify "$m" --size real --traffic --calls "$calls" --device cuda --mode "$mode" \
    --json "$out/$m.$mode.json" >"$out/$m.$mode.txt" 2>&1
  rc=$?
  echo "$m $mode: exit $rc, $(( $(date +%s) - t0 )) s wall" | tee -a "$out/$m.$mode.txt"
  return $rc
}
status=0
if [[ "${PARALLEL:-0}" == 1 ]]; then
  pids=()
  for m in $models; do run "$m" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
else
  for m in $models; do run "$m" || status=1; done
fi
exit $status
