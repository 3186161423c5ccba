#!/usr/bin/env bash
# Set up .venv (scripts/bootstrap.sh) and run the whole test-suite, slow tests included, on two pytest-xdist
# workers (PATCHKIT_TEST_WORKERS; 0 runs in one process).  GPU-only tests (marker `gpu`) skip themselves
# without CUDA.  The suite must stay inside its time budget (PATCHKIT_TEST_BUDGET_S, default 1800 s): a green
# run past it fails, so slow checks move to benchmarks/ instead of creeping into CI.  The counterfactual tests (a
# tree patched without one of its fixes shows the hazard again) run in benchmarks/counterfactual.sh instead; a
# later `-m EXPR` replaces that selection.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
workers="${PATCHKIT_TEST_WORKERS:-2}"
budget="${PATCHKIT_TEST_BUDGET_S:-1800}"
args=()
[ "$workers" = 0 ] || args=(-n "$workers" --dist worksteal)
start=$(date +%s)
rc=0
.venv/bin/python -m pytest "${args[@]}" -m "not counterfactual" "$@" || rc=$?
elapsed=$(( $(date +%s) - start ))
echo "test-suite: ${elapsed} s of its ${budget} s budget"
if [ "$rc" -eq 0 ] && [ "$elapsed" -gt "$budget" ]; then
  echo "test-suite: ${elapsed} s is past its ${budget} s budget: move slow checks to benchmarks/" >&2
  exit 1
fi
exit "$rc"
