"""upgrade-check on sdists written for the test (applied / already fixed / drifted), and on the real index."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import libcst as cst
import pytest

from patchkit import errors, patches, render, upgrade
from patchkit.codemods import REGISTRY, PatchkitCodemod
from patchkit.patchset import Package, PatchSet, PipSource, Step, UpstreamTests

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
    assert data["schema"] == 2 and data["verdict"] == "drift" and data["target"] == "2.0"
    assert data["steps"][0]["codemod"] == "isnan-guard" and data["steps"][0]["status"] == "drifted"
    assert (tmp_path / "r.md").read_text().startswith("### patchkit upgrade-check: `fakecast` 1.0 → 2.0")
    assert snapshot(ws) == {}  # vendor/ untouched: nothing written in the workspace


def test_matrix_cells_follow_the_code(tmp_path: Path):
    reports = [
        upgrade.upgrade_check(FAKE, v, archive=sdist(tmp_path, v, src), verify=False, upstream_tests=False)
        for v, src in (("1.0", GUARDED), ("1.1", ALREADY_FIXED), ("2.0", DRIFTED))
    ]
    table = render.upgrade_matrix(reports)
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
    assert t["patched"]["passed"] >= 2 and t["patched"]["failed"] == 0 and t["patched"]["errors"] == 0
    assert t["pristine"]["passed"] == t["patched"]["passed"] and t["regressions"] == {}


# -- upstream tests: pristine baseline against patched, test by test ------------------------------------------
TESTED_MODEL = GUARDED + '''

def scale(x):
    return x * 2
'''
UPSTREAM_TESTS = '''import pytest
import torch

from fakecast.model import Forecaster, scale


def test_scale():
    assert scale(3) == 6


def test_guard_raises():
    with pytest.raises(ValueError):
        Forecaster()._prepare_future(torch.tensor([float("nan")]), torch.tensor([1.0]))


def test_needs_a_missing_dependency():
    import fakecast_missing_dependency  # noqa: F401  (fails on pristine too: a baseline failure)
'''
PKG_INFO = '''Metadata-Version: 2.1
Name: fakecast
Version: {version}
Requires-Dist: torch<1
Requires-Dist: fakecast-missing-dependency>=1
Requires-Dist: pytest
Requires-Dist: fakecast-docs-only; extra == "docs"

'''


class Harmful(PatchkitCodemod):
    """Written for this test: breaks ``scale``, which an upstream test covers."""

    NAME = "harmful-for-test"
    DESCRIPTION = "doubles scale's result"

    def leave_Return(self, original_node, updated_node):
        if self.function_stack and self.function_stack[-1] == "scale":
            self.record(original_node, "doubles the result")
            return updated_node.with_changes(value=cst.parse_expression("x * 4"))
        return updated_node


def sdist_with_tests(tmp: Path, version: str, conftest: str = "") -> Path:
    path = tmp / f"fakecast-{version}.tar.gz"
    members = {
        "src/fakecast/__init__.py": "",
        "src/fakecast/model.py": TESTED_MODEL,
        "test/test_model.py": UPSTREAM_TESTS,
        "PKG-INFO": PKG_INFO.format(version=version),
    }
    if conftest:
        members["test/conftest.py"] = conftest
    with tarfile.open(path, "w:gz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"fakecast-{version}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def with_tests(*steps: Step) -> PatchSet:
    return replace(
        FAKE,
        source=PipSource(package="fakecast", dist="sdist",
                         include=(("src/fakecast/", "fakecast/"), ("test/", "test/")), meta=("PKG-INFO",)),
        steps=steps or FAKE.steps,
        upstream_tests=UpstreamTests(paths=("test",)),
        package=Package(dist="fakecast", summary="test", requirements="PKG-INFO"),
    )


def test_baseline_failures_are_not_regressions_and_conflicts_are_named(tmp_path: Path):
    r = upgrade.upgrade_check(with_tests(), "1.0", archive=sdist_with_tests(tmp_path, "1.0"), verify=False)
    assert (r.verdict, r.exit_code) == ("safe-with-baseline-failures", 0), r.reasons
    t = r.upstream_tests
    assert t["regressions"] == {}
    assert t["pristine"]["passed"] == t["patched"]["passed"] == 2
    [(cause, names)] = t["baseline_failures"].items()
    assert "fakecast_missing_dependency" in cause and names[0].endswith("test_needs_a_missing_dependency")
    conflicts = r.dependency_conflicts
    assert any(c.startswith("1.0 requires torch<1, installed ") for c in conflicts), conflicts
    assert "1.0 requires fakecast-missing-dependency>=1, not installed" in conflicts
    assert not any("docs" in c or "pytest" in c for c in conflicts)  # extras and satisfied ones are not conflicts
    md = render.upgrade(r)
    assert "**SAFE-WITH-BASELINE-FAILURES**" in md and "1 × `" in md
    assert render._tests(r) == "2 passed, 0 regressed, 1 fail on pristine too"


def test_a_harmful_step_is_a_regression(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(REGISTRY, Harmful.NAME, Harmful)
    ps = with_tests(*FAKE.steps, Step(Harmful.NAME, ("fakecast/model.py",), {}))
    r = upgrade.upgrade_check(ps, "1.0", archive=sdist_with_tests(tmp_path, "1.0"), verify=False)
    assert (r.verdict, r.exit_code) == ("regressed", errors.EXIT_VERIFY_FAILED)
    assert list(r.upstream_tests["regressions"]) == ["test.test_model::test_scale"]
    assert "assert 12 == 6" in r.upstream_tests["regressions"]["test.test_model::test_scale"]
    assert len(r.upstream_tests["baseline_failures"]) == 1  # still told apart from the regression


def test_pristine_target_that_cannot_run_is_an_environment_verdict(tmp_path: Path):
    archive = sdist_with_tests(tmp_path, "1.0", conftest="raise ImportError('fakecast needs a GPU runtime')\n")
    r = upgrade.upgrade_check(with_tests(), "1.0", archive=archive, verify=False)
    assert (r.verdict, r.exit_code) == ("environment", errors.EXIT_ENVIRONMENT)
    assert "do not run on the pristine target" in r.environment_problems[0]
    assert r.upstream_tests["regressions"] == {}  # the patched run fails the same way: not the patch's fault


@pytest.mark.slow
def test_isolated_environment_holds_the_targets_own_requirements(tmp_path: Path, monkeypatch):
    """--isolated: a cached venv with the target's Requires-Dist (torch pinned to the running version);
    conflicts are judged there, the tests run there, and a requirement the index cannot satisfy is an
    environment verdict with pip's reason.  Needs the package index (it installs torch into the venv)."""
    import torch

    monkeypatch.setenv("PATCHKIT_CACHE", str(tmp_path / "cache"))
    good = PKG_INFO.replace("Requires-Dist: torch<1\nRequires-Dist: fakecast-missing-dependency>=1\n",
                            "Requires-Dist: torch>=2\n")
    archive = sdist_with_tests(tmp_path, "1.0")
    with tarfile.open(archive) as tf:  # same sdist, satisfiable requirements
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    members["fakecast-1.0/PKG-INFO"] = good.format(version="1.0").encode()
    good_archive = tmp_path / "good" / "fakecast-1.0.tar.gz"
    good_archive.parent.mkdir()
    with tarfile.open(good_archive, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    r = upgrade.upgrade_check(with_tests(), "1.0", archive=good_archive, verify=False, isolated=True)
    assert r.environment.startswith("isolated (fakecast-1.0-"), r.environment
    assert r.dependency_conflicts == []
    assert r.verdict == "safe-with-baseline-failures"  # the test of an undeclared dependency still fails
    env = next((tmp_path / "cache" / "envs").iterdir())
    assert f"torch=={torch.__version__.split('+')[0]}" in (env / "requirements.txt").read_text().splitlines()
    again = upgrade.upgrade_check(with_tests(), "1.0", archive=good_archive, verify=False, isolated=True)
    assert again.environment == r.environment and again.seconds < r.seconds  # cached: not rebuilt

    bad = upgrade.upgrade_check(with_tests(), "1.0", archive=archive, verify=False, isolated=True)
    assert (bad.verdict, bad.exit_code) == ("environment", errors.EXIT_ENVIRONMENT)
    assert "fakecast-missing-dependency" in bad.environment_problems[0]
