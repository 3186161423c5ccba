"""patchkit.provenance: the one identity check of packages and cache artifacts (no model is built here)."""

from __future__ import annotations

import pytest
import torch

from patchkit.aot import PACKAGE, PackageMismatch
from patchkit.compile_cache import CACHE_ARTIFACT, CacheMismatch
from patchkit.errors import EnvironmentProblem
from patchkit.provenance import Provenance

HERE = {"model": "toto", "torch": torch.__version__, "patch_hash": "abc", "device": "cpu"}


@pytest.mark.parametrize("kind,error,made,fix", [
    (PACKAGE, PackageMismatch, "exported with torch 2.0.0", "re-export it with `patchkit export toto`"),
    (CACHE_ARTIFACT, CacheMismatch, "saved by torch 2.0.0", "re-run `patchkit cache warm toto`"),
])
def test_each_artifact_kind_refuses_another_torch_patch_set_or_model_naming_its_fix(kind, error, made, fix):
    Provenance.of(HERE).check("a", kind, patch_hash="abc", model="toto")  # accepted
    Provenance.of(HERE).check("a", kind)  # no patch set to compare with: torch alone
    with pytest.raises(error, match=f"{made}, this process runs torch .*; {fix}"):
        Provenance.of({**HERE, "torch": "2.0.0"}).check("a", kind, patch_hash="abc")
    with pytest.raises(error, match=f"from patch set old, the current patched toto is abc; {fix}"):
        Provenance.of({**HERE, "patch_hash": "old"}).check("a", kind, patch_hash="abc")
    with pytest.raises(error, match="for 'kronos', not 'toto'; "):
        Provenance.of({**HERE, "model": "kronos"}).check("a", kind, model="toto")


def test_a_cuda_artifact_without_a_gpu_is_an_environment_problem_and_usable_ignores_the_device():
    cuda = Provenance.of({**HERE, "device": "cuda:0"})
    if not torch.cuda.is_available():
        with pytest.raises(EnvironmentProblem, match="torch sees no CUDA device"):
            cuda.check("a", PACKAGE)
    assert cuda.usable("abc") and cuda.usable(None)
    assert not Provenance.of({**HERE, "patch_hash": "old"}).usable("abc")
    assert not Provenance.of({**HERE, "torch": "2.0.0"}).usable("abc")
    assert Provenance.of({}).device == "cpu" and Provenance.of({}).torch is None
