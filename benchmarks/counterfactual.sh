#!/usr/bin/env bash
# The counterfactual tests: each patches a tree without one of its fixes and shows the hazard come back, so the
# fix is still needed on this torch and verify still sees it.  Run before a torch or upstream upgrade, and after
# changing a patch set; scripts/test.sh leaves them out (a few minutes of Dynamo tracing each).
#   benchmarks/counterfactual.sh              # all of them, on two workers
#   benchmarks/counterfactual.sh -k toto -n 0
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/python -c "import torch, platform, os; print(f'torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} cores')"
exec .venv/bin/python -m pytest -m counterfactual -n 2 --dist worksteal "$@"
