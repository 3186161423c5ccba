"""upgrade-check on sdists written for the test (applied / already fixed / drifted), and on the real index."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from patchkit import errors, patches, upgrade
from patchkit.patchset import PatchSet, PipSource, Step, UpstreamTests

from .conftest import run_cli, snapshot

GUARDED = '''import torch


class Forecaster:
    def _prepare_future(self, fc, mask):
        fc = torch.where(mask > 0, fc, 0.0)
        if torch.isnan(fc).any():
            raise ValueError("unmasked NaN in future covariates")
        return fc
'''
ALREADY_FIXED = GUARDED.replace("if torch.isnan(fc).any():", "if not torch.compiler.is_compiling() and torch.isnan(fc).any():")
DRIFTED = GUARDED.replace(
    '''        if torch.isnan(fc).any():
            raise ValueError("unmasked NaN in future covariates")
''', '''        fc = torch.nan_to_num(fc)  # the guard was replaced by sanitising
''')

FAKE = PatchSet(
    model="fakecast",
    title="a forecaster written for this test",
    source=PipSource(package="fakecast", dist="sdist", include=(("src/fakecast/", "fakecast/"),)),
    pin="1.0",
    known_versions=("1.0", "1.1", "2.0"),
    steps=(Step("isnan-guard", ("fakecast/model.py",), {"functions": ["_prepare_future"]}),),
    harness="unused:Harness",
    provides=("fakecast",),
)


def sdist(tmp: Path, version: str, model_py: str) -> Path:
    path = tmp / f"fakecast-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, text in ((f"fakecast-{version}/src/fakecast/__init__.py", ""),
                           (f"fakecast-{version}/src/fakecast/model.py", model_py)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("version,source,verdict,status", [
    ("1.0", GUARDED, "safe", "applied"),
    ("1.1", ALREADY_FIXED, "safe", "already-fixed"),
    ("2.0", DRIFTED, "drift", "drifted"),
])
def test_step_verdicts(tmp_path: Path, version, source, verdict, status):
    r = upgrade.upgrade_check(FAKE, version, archive=sdist(tmp_path, version, source), verify=False,
                              upstream_tests=False)
    assert (r.verdict, r.steps[0].status) == (verdict, status)
    assert r.exit_code == {"safe": 0, "drift": errors.EXIT_DRIFT}[verdict]
    if status == "applied":
        assert r.steps[0].sites == ["fakecast/model.py:7"]
    if status == "drifted":
        assert "fakecast/model.py" in r.steps[0].message and "torch.isnan(...).any()" in r.steps[0].message
        assert "isnan-guard" in r.reasons[0]


def test_cli_drift_exit_code_json_and_markdown(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(patches, "get", lambda model: FAKE)
    ws = tmp_path / "ws"
    ws.mkdir()
    archive = sdist(tmp_path, "2.0", DRIFTED)
    code, out, _ = run_cli(capsys, "--root", str(ws), "upgrade-check", "fakecast", "--to", "2.0", "--from",
                           str(archive), "--no-verify", "--json", str(tmp_path / "r.json"), "--markdown",
                           str(tmp_path / "r.md"))
    assert code == errors.EXIT_DRIFT
    assert "**DRIFT**" in out and "`isnan-guard` | drifted" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema"] == 1 and data["verdict"] == "drift" and data["target"] == "2.0"
    assert data["steps"][0]["codemod"] == "isnan-guard" and data["steps"][0]["status"] == "drifted"
    assert (tmp_path / "r.md").read_text().startswith("### patchkit upgrade-check: `fakecast` 1.0 → 2.0")
    assert snapshot(ws) == {}  # vendor/ untouched: nothing written in the workspace


def test_matrix_cells_follow_the_code(tmp_path: Path):
    reports = [
        upgrade.upgrade_check(FAKE, v, archive=sdist(tmp_path, v, src), verify=False, upstream_tests=False)
        for v, src in (("1.0", GUARDED), ("1.1", ALREADY_FIXED), ("2.0", DRIFTED))
    ]
    table = upgrade.render_matrix(reports)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| version | isnan-guard |")
    assert [line.split(" | ")[1] for line in lines[2:]] == ["applied model.py:7", "already-fixed model.py:7", "drifted"]
    assert [line.rstrip(" |").split(" | ")[-1] for line in lines[2:]] == ["safe", "safe", "drift"]


def test_real_chronos_history_dry_run():
    """Every published chronos-forecasting release: the isnan guard is found (it moved lines)."""
    ps = patches.get("chronos2")
    lines = {}
    for version in ps.known_versions:
        r = upgrade.upgrade_check(ps, version, verify=False, upstream_tests=False)
        assert r.verdict == "safe" and r.steps[0].status == "applied", (version, r.steps)
        lines[version] = r.steps[0].sites
    assert lines["2.0.0"] == ["chronos/chronos2/model.py:443"]
    assert lines["2.3.2"] == ["chronos/chronos2/model.py:463"]


def test_real_toto_history_dry_run():
    ps = patches.get("toto")
    for version in ps.known_versions:
        r = upgrade.upgrade_check(ps, version, verify=False, upstream_tests=False)
        assert r.verdict == "safe", (version, [(s.codemod, s.status, s.message) for s in r.steps])
        assert {s.status for s in r.steps} == {"applied"}


@pytest.mark.slow
def test_real_chronos_upgrade_with_verify_and_upstream_tests(tmp_path: Path, capsys, monkeypatch):
    """The whole check on a real release; upstream's suite narrowed to one file (the full
    suite on the pinned release runs in test_chronos2.py)."""
    real = patches.get("chronos2")
    narrowed = PatchSet(**{**real.__dict__, "upstream_tests": UpstreamTests(paths=("test/test_utils.py",))})
    monkeypatch.setattr(patches, "get", lambda model: narrowed)
    code, out, err = run_cli(capsys, "--root", str(tmp_path), "upgrade-check", "chronos2", "--to", "2.3.0",
                             "--json", str(tmp_path / "r.json"))
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 0, out + err
    assert data["verdict"] == "safe"
    assert data["verify"]["upstream"]["graph_breaks"] >= 1 and data["verify"]["patched"]["graph_breaks"] == 0
    assert data["uncovered_break_sites"] == []
    t = data["upstream_tests"]
    assert t["passed"] >= 2 and t["failed"] == 0 and t["errors"] == 0
