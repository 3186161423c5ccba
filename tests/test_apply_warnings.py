"""Codemod warnings (``context.warnings``) reach the apply result and ``patchkit apply``'s stderr."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from patchkit import api, patches
from patchkit.codemods import REGISTRY, run_codemod
from patchkit.patchset import Step

from .conftest import FIXTURES, run_cli
from .test_upgrade_check import FAKE, sdist

#: decode-prefix-slice without ``prefix_tensor`` rewrites the site and warns that the upstream assert is not kept
MODEL_PY = (FIXTURES / "decode-prefix-slice" / "expression_step.in.py").read_text()
WARNED = replace(FAKE, steps=(Step("decode-prefix-slice", ("fakecast/model.py",), {"receivers": ["kv_cache"]}),))
WARNING = ("decode-prefix-slice: no prefix_tensor given: under compile a call that feeds more than one new step "
           "past kv_cache is not caught (upstream asserts it)")


def test_run_codemod_returns_the_warnings():
    result = run_codemod(REGISTRY["decode-prefix-slice"], MODEL_PY, options={"receivers": ["kv_cache"]})
    assert result.changed and result.warnings == (WARNING,)
    quiet = run_codemod(REGISTRY["decode-prefix-slice"], MODEL_PY,
                        options={"receivers": ["kv_cache"], "prefix_tensor": "kv_cache.filled"})
    assert quiet.changed and quiet.warnings == ()


def test_apply_prints_warnings_on_stderr(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(patches, "get", lambda model: WARNED)
    ws = tmp_path / "ws"
    ws.mkdir()
    archive = sdist(tmp_path, "1.0", MODEL_PY)
    code, _, _ = run_cli(capsys, "--root", str(ws), "vendor", "fakecast", "--archive", str(archive))
    assert code == 0
    code, out, err = run_cli(capsys, "--root", str(ws), "apply", "fakecast")
    assert code == 0
    assert err.splitlines() == [f"warning: fakecast/model.py: {WARNING}"]
    assert "warning:" not in out and "decode-prefix-slice" in out

    assert api.apply("fakecast", root=ws, check=True).warnings == (f"fakecast/model.py: {WARNING}",)
