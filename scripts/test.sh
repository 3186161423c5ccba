#!/usr/bin/env bash
# Set up .venv (scripts/bootstrap.sh) and run the whole test-suite, slow tests included.
# GPU-only tests (marker `gpu`) skip themselves without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
