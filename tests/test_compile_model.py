"""``patchkit.runtime.compile_model``: each model's one compile recipe, driven through the calls users write.

Each probe runs in a fresh process with the patched tree first on ``sys.path`` (tests/compile_probe.py) and
compiles with Dynamo's ``eager`` backend: graphs and guards are decided before any backend runs, and the recipe
wraps every unit in ``runtime.compile``'s guard, whose fallback or recompile-limit warnings fail the probe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from patchkit import api, patches

PROBE = Path(__file__).with_name("compile_probe.py")

#: compiled vs eager, max abs difference over the output's scale, per call
DRIFT = 1e-5


def _probe(tree: Path, kind: str) -> dict:
    done = subprocess.run([sys.executable, str(PROBE), str(tree), kind, "eager"], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def _patched(ws: Path, model: str) -> Path:
    return api.workspace(ws).patched(model)


@pytest.mark.slow
def test_chronos2_model_called_directly_holds_two_graphs(chronos_ws: Path):
    """A service batching its own requests: Chronos2Model called with batch 1-32, histories past context_length,
    1 to max_output_patches output patches, with and without future covariates."""
    out = _probe(_patched(chronos_ws, "chronos2"), "chronos2-model")
    assert out["graphs"] <= patches.get("chronos2").traffic.graph_budget["model"] == 2, out
    assert len(out["drift"]) == 12 and max(out["drift"]) <= DRIFT, out


@pytest.mark.slow
def test_chronos2_pipeline_with_few_output_patches_holds_two_graphs(chronos_ws: Path):
    out = _probe(_patched(chronos_ws, "chronos2"), "chronos2-pipeline")
    assert out["graphs"] <= 2 and max(out["drift"]) <= DRIFT, out


@pytest.mark.slow
@pytest.mark.parametrize("model", ["chronos2", "toto", "kronos"])
def test_compile_model_serves_the_short_profile_within_budget(model: str, request):
    ws = request.getfixturevalue({"chronos2": "chronos_ws", "toto": "toto_ws", "kronos": "kronos_ws"}[model])
    out = _probe(_patched(ws, model), model)
    assert set(out["graphs"]) == set(out["budget"]), out  # every budgeted unit compiled, and no other
    assert all(out["graphs"][u] <= b for u, b in out["budget"].items()), out
    assert out["fallbacks"] == 0 and out["drift"] and max(out["drift"]) <= DRIFT, out


@pytest.mark.slow
def test_kronos_decode_methods_compiled_by_hand_warn_once(kronos_ws: Path):
    out = _probe(_patched(kronos_ws, "kronos"), "kronos-by-hand")
    assert len(out["warnings"]) == 1 and "patchkit.runtime.compile_model(model)" in out["warnings"][0], out


def test_compile_model_refuses_what_it_does_not_know():
    from patchkit.runtime import compile_model, compiled_units

    with pytest.raises(TypeError, match="Chronos2Pipeline"):
        compile_model(object())
    with pytest.raises(ValueError, match="not compiled by"):
        compiled_units(object())


def test_every_patch_set_names_a_compile_recipe():
    import importlib

    for model in patches.names():
        ps = patches.get(model)
        module, _, fn = ps.compile_recipe.partition(":")
        assert callable(getattr(importlib.import_module(module), fn)) and ps.compile_targets, model
