"""The contract every registered model's patch set keeps, checked once over all of them.

A model is a folder ``patches/<model>/``: ``__init__.py`` (``PATCHSET``), ``harness.py`` (the verify harness and
the compile recipe) and, for ``export``, ``aot.py``.  Adding a model to ``patches.MODELS`` puts it under these
checks; the model's own tests cover what its upstream does.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from libcst.codemod import CodemodContext

from patchkit import patches
from patchkit.codemods import REGISTRY
from patchkit.verify.harness import Harness, require
from patchkit.verify.protocol import Exportable, TrafficServing

MODELS = patches.names()


def _resolve(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("model", MODELS)
def test_patch_set_is_well_formed(model: str) -> None:
    ps = patches.get(model)
    assert ps.model == model and ps.title and ps.provides
    assert ps.pin in ps.known_versions
    assert ps.steps, "a patch set without steps patches nothing"
    for step in ps.steps:
        assert step.codemod in REGISTRY, step.codemod
        REGISTRY[step.codemod](CodemodContext(), **step.options)  # raises on unknown or missing options
        assert step.files and all(f.endswith(".py") and f.split("/")[0] in ps.provides for f in step.files), step
        assert step.why.strip(), f"{step.codemod}: every step says why"
        assert "\n" not in step.why and len(step.why) <= 110, f"{step.codemod}: why= is one line; the rest in docs"
    assert ps.traffic is not None and ps.traffic.graph_budget, "verify --traffic needs a graph budget"


@pytest.mark.parametrize("model", MODELS)
def test_the_model_is_one_folder_and_its_references_resolve(model: str) -> None:
    ps = patches.get(model)
    folder = Path(patches.__file__).parent / model
    assert (folder / "__init__.py").is_file() and (folder / "harness.py").is_file()
    harness = _resolve(ps.harness)
    assert issubclass(harness, Harness) and harness.model == model
    for ref in (ps.harness, ps.compile_recipe, ps.aot_runtime):
        if ref:
            assert ref.startswith(f"patchkit.patches.{model}."), f"{ref}: a model's code lives in its own folder"
            assert callable(_resolve(ref))
    if ps.aot_runtime:
        assert (folder / "aot.py").is_file()


@pytest.mark.parametrize("model", MODELS)
def test_the_patch_set_and_harness_import_without_the_upstream(model: str) -> None:
    """verify runs the harness against a vendored tree in a subprocess: importing patchkit's side must not import
    (or need) the upstream package."""
    ps = patches.get(model)
    code = (f"import sys; import patchkit.patches.{model}.harness; "
            f"assert not [m for m in {list(ps.provides)!r} if m in sys.modules]")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("model", MODELS)
def test_the_harness_has_the_capabilities_the_patch_set_promises(model: str) -> None:
    """A traffic budget needs a harness that serves traffic; an ``aot_runtime`` one that exports."""
    ps = patches.get(model)
    harness = _resolve(ps.harness)
    assert issubclass(harness, TrafficServing) == (ps.traffic is not None)
    assert issubclass(harness, Exportable) == bool(ps.aot_runtime)


def test_a_harness_without_a_capability_is_refused_by_name(tmp_path: Path) -> None:
    class Minimal(Harness):
        model = "minimal"

        def describe(self):
            return {}

        def workload(self, compile_fn):
            return None

        def forecast(self, series, compile_fn):
            return []

    h = Minimal(tmp_path)
    with pytest.raises(NotImplementedError, match="minimal harness has no traffic entry point"):
        require(h, TrafficServing)
    with pytest.raises(NotImplementedError, match="minimal harness has no ahead-of-time export yet"):
        require(h, Exportable)


@pytest.mark.parametrize("model", MODELS)
def test_every_step_is_explained_in_the_patch_sets_page(model: str) -> None:
    """docs/patch-sets.md keeps each step's longer account under its model, led by the step's one-line why."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "patch-sets.md").read_text()
    section = page.split(f"## `{model}`", 1)[1].split("\n## ", 1)[0]
    for i, step in enumerate(patches.get(model).steps, 1):
        assert f"{i}. **`{step.codemod}`**" in section and step.why in section, (model, i, step.codemod)

