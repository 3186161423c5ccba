#!/usr/bin/env bash
# Real-size figures for one model: the published architecture with seeded random weights.
#   benchmarks/bench_real.sh chronos2 [extra bench args]
# 1. verify --traffic --size real: graphs per compiled unit against the budget, steady pass, fidelity,
#    eager / compiled-steady latency (JSON in reports/MODEL.real.traffic.json)
# 2. bench --size real --traffic: fixed-shape rows (float32, bfloat16) and the traffic row with
#    break-even call counts (reports/MODEL.real.bench.json / .md)
# Each step prints the torch version, device and size it ran with.  Slow on a CPU: minutes per model.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:?model}"; shift || true
pk=.venv/bin/patchkit
mkdir -p reports
.venv/bin/python -c "import torch, platform, os; print(f'torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, cuda {torch.cuda.is_available()}')"
start=$(date +%s)
$pk verify "$model" --size real --traffic --json "reports/$model.real.traffic.json" | tee "reports/$model.real.traffic.txt" || rc=$?
mid=$(date +%s)
echo "verify --traffic --size real: $((mid - start)) s wall (exit ${rc:-0})"
$pk bench "$model" --size real --modes eager,default --dtype float32,bfloat16 --runs 5 --batch 8 --no-warm-start \
  --traffic --json "reports/$model.real.bench.json" --markdown "reports/$model.real.bench.md" "$@" \
  | tee "reports/$model.real.bench.txt"
echo "bench --size real --traffic: $(( $(date +%s) - mid )) s wall"
exit "${rc:-0}"
