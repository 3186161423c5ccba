#!/usr/bin/env bash
# Create .venv with everything patchkit, its tests and the vendored upstreams need.
# torch==2.13.0 goes in first so no looser requirement pulls another torch build.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.patchkit-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --upgrade pip
  .venv/bin/python -m pip install "torch==2.13.0"
  .venv/bin/python -m pip install -e ".[all]"
  echo "$want" > "$stamp"
fi
