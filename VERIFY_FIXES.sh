#!/usr/bin/env bash
# Vendor, apply and verify every registered model, print one summary table,
# exit non-zero if any model fails.  No logic of its own: it drives `patchkit`.
#   ./VERIFY_FIXES.sh                 all models
#   ./VERIFY_FIXES.sh chronos2 toto   some models
# Kronos is vendored from git; point PATCHKIT_KRONOS_FROM at a local clone or
# mirror when the default URL is out of reach.
set -uo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh || exit 3
pk=.venv/bin/patchkit
models=("$@")
[ ${#models[@]} -gt 0 ] || mapfile -t models < <($pk list --names)
mkdir -p reports
status=0
for m in "${models[@]}"; do
  echo "== $m"
  from=()
  var="PATCHKIT_$(echo "$m" | tr '[:lower:]' '[:upper:]')_FROM"
  [ -n "${!var:-}" ] && from=(--from "${!var}")
  rm -f "reports/$m.verify.json"
  $pk vendor "$m" "${from[@]}" && $pk apply "$m" \
    && $pk verify "$m" --logs graph_breaks,recompiles --json "reports/$m.verify.json"
  rc=$?
  [ $rc -eq 0 ] || { echo "!! $m failed with exit code $rc"; status=1; }
done
echo
$pk report "${models[@]/#/reports/}" --suffix .verify.json || status=1
exit $status
