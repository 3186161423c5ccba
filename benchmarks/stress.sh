#!/usr/bin/env bash
# Compiled-vs-eager fidelity under load, for one model: the traffic profile's steady pass repeated over the
# eager pass's own data while busy processes share the CPU, every call of every repeat compared with eager per
# element (max |compiled - eager| / mean |eager| <= 1e-5) and by relative L2.  Also the held-out seeds: the
# graph budget on profiles the patch sets were not tuned on.
#   benchmarks/stress.sh toto                       # tiny, seed 0, 20 repeats beside 2 busy processes
#   SIZE=real SEEDS="0 7" REPEATS=20 LOAD=1 CALLS=24 benchmarks/stress.sh toto
#   SEEDS=1 CALLS=4 REPEATS=2 LOAD=1 benchmarks/stress.sh toto   # the short check (about 2.5 min), cold compile included
# Reports: reports/MODEL.SIZE.seedS.stress.json (+ .txt); one summary line per seed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:?model}"
size="${SIZE:-tiny}"; seeds="${SEEDS:-0}"; repeats="${REPEATS:-20}"; load="${LOAD:-2}"; calls="${CALLS:-24}"
pk=.venv/bin/patchkit
mkdir -p reports
.venv/bin/python -c "import torch, platform, os; print(f'torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores, cuda {torch.cuda.is_available()}')"
summary=()
rc=0
for seed in $seeds; do
  out="reports/$model.$size.seed$seed.stress"
  start=$(date +%s)
  code=0
  $pk verify "$model" --traffic --size "$size" --seed "$seed" --calls "$calls" --repeats "$repeats" --load "$load" \
    --json "$out.json" | tee "$out.txt" || code=$?
  [ "$code" -eq 0 ] || rc=$code
  summary+=("$(.venv/bin/python - "$out.json" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
units = ", ".join(f"{u['name']} {u['graphs']}/{u['budget']}" for u in r["patched"]["units"])
held = [c["worst_elem"] for c in r["fidelity"] if c.get("elem_bound") is not None]
sampled = max((c["worst_rel"] for c in r["fidelity"] if c["what"].startswith("patched compiled")
               and "sampled" in c["what"]), default=None)
drift = (f"worst element {max(held):.2e}" if held else "no deterministic output") + (
    "" if sampled is None else f", sampled-path quantiles {sampled:.2e}")
print(f"{r['model']} {r['size']} seed {r['seed']}: {len(r['calls'])} calls, graphs {units}, "
      f"{r['repeats']} repeats beside {r['load_procs']} busy, {drift}, "
      f"{'OK' if r['ok'] else 'FAILED'} ({sys.argv[2]} s)")
PY
)")
done
printf '%s\n' "${summary[@]}"
exit "$rc"
