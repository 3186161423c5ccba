"""The Toto patch set is well formed: known codemods, accepted options, lazy harness."""

from __future__ import annotations

import subprocess
import sys

from libcst.codemod import CodemodContext

from patchkit.codemods import REGISTRY
from patchkit.patches.toto import PATCHSET, TotoHarness
from patchkit.verify.harness import Harness


def test_steps_name_registered_codemods_with_valid_options() -> None:
    assert PATCHSET.pin in PATCHSET.known_versions
    for step in PATCHSET.steps:
        cls = REGISTRY[step.codemod]
        cls(CodemodContext(), **step.options)  # raises on unknown or missing options
        assert step.files and all(f.startswith("toto/") and f.endswith(".py") for f in step.files)
        assert step.why


def test_harness_contract() -> None:
    assert issubclass(TotoHarness, Harness) and TotoHarness.model == PATCHSET.model
    module, _, cls = PATCHSET.harness.partition(":")
    assert (module, cls) == ("patchkit.patches.toto", "TotoHarness")
    # the workload drives at least 16 decode steps and two horizons
    stride = 8
    assert len(set(TotoHarness.workload_horizons)) >= 2
    assert max(TotoHarness.workload_horizons) // stride - 1 >= 16


def test_module_imports_without_toto() -> None:
    code = "import sys; import patchkit.patches.toto; assert 'toto' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
