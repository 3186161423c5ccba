#!/usr/bin/env bash
# Vendor, apply and verify every registered model: the fixed workload, then the
# traffic profile (varied calls through the upstream's own entry point, graph
# budgets, fidelity).  Prints one summary table; exits non-zero if any model fails.
# No logic of its own: it drives `patchkit`.
#   ./VERIFY_FIXES.sh                      all models, tiny sizes
#   ./VERIFY_FIXES.sh chronos2 toto        some models
#   PATCHKIT_SIZE=real ./VERIFY_FIXES.sh   the published architectures (seeded random weights; slow on a CPU)
# Kronos is vendored from git; point PATCHKIT_KRONOS_FROM at a local clone or
# mirror when the default URL is out of reach.
set -uo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh || exit 3
pk=.venv/bin/patchkit
size="${PATCHKIT_SIZE:-tiny}"
models=("$@")
[ ${#models[@]} -gt 0 ] || mapfile -t models < <($pk list --names)
mkdir -p reports
status=0
for m in "${models[@]}"; do
  echo "== $m"
  from=()
  var="PATCHKIT_$(echo "$m" | tr '[:lower:]' '[:upper:]')_FROM"
  [ -n "${!var:-}" ] && from=(--from "${!var}")
  rm -f "reports/$m.verify.json" "reports/$m.traffic.json"
  $pk vendor "$m" "${from[@]}" && $pk apply "$m" \
    && $pk verify "$m" --size "$size" --logs graph_breaks,recompiles --json "reports/$m.verify.json" \
    && $pk verify "$m" --size "$size" --traffic --json "reports/$m.traffic.json"
  rc=$?
  [ $rc -eq 0 ] || { echo "!! $m failed with exit code $rc"; status=1; }
done
echo
$pk report "${models[@]/#/reports/}" --suffix .verify.json || status=1
$pk report "${models[@]/#/reports/}" --suffix .traffic.json || status=1
exit $status
