"""vendor / apply on the real chronos-forecasting sdist: happy path, idempotence, atomicity, bad input."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from patchkit import api, apply as apply_mod, errors, patches
from patchkit.codemods import helpers_source
from patchkit.patchset import PatchSet, Step

from .conftest import run_cli, snapshot


def test_vendor_writes_lock_and_pristine_tree(chronos_vendored: Path):
    lock = json.loads((chronos_vendored / "vendor" / "chronos2.lock.json").read_text())
    assert lock["version"] == "2.3.2"
    assert lock["source"]["kind"] == "pip" and len(lock["source"]["sha256"]) == 64
    assert "chronos/chronos2/model.py" in lock["files"]
    assert "test/dummy-chronos2-model/config.json" in lock["files"]  # sdist keeps upstream's tests
    assert (chronos_vendored / "vendor" / ".pristine" / "chronos2" / "chronos" / "__init__.py").is_file()


def test_committed_lock_matches_the_index(chronos_vendored: Path):
    """The lock in the repository pins the same archive the index serves."""
    repo_lock = json.loads((Path(__file__).parents[1] / "vendor" / "chronos2.lock.json").read_text())
    fresh = json.loads((chronos_vendored / "vendor" / "chronos2.lock.json").read_text())
    assert repo_lock["source"]["sha256"] == fresh["source"]["sha256"]
    assert repo_lock["files"] == fresh["files"]


def test_apply_patches_idempotently(chronos_ws: Path, capsys):
    tree = chronos_ws / "vendor" / "chronos2"
    model_py = (tree / "chronos" / "chronos2" / "model.py").read_text()
    assert "if not torch.compiler.is_compiling() and torch.isnan(future_covariates).any():" in model_py
    before = snapshot(chronos_ws)
    mtimes = {p: p.stat().st_mtime_ns for p in tree.rglob("*.py")}
    code, out, _ = run_cli(capsys, "--root", str(chronos_ws), "apply", "chronos2")
    assert code == 0 and "nothing written" in out
    assert snapshot(chronos_ws) == before
    assert {p: p.stat().st_mtime_ns for p in tree.rglob("*.py")} == mtimes


def test_patched_tree_differs_only_where_the_patch_set_says(chronos_ws: Path):
    pristine = snapshot(chronos_ws / "vendor" / ".pristine" / "chronos2")
    patched = snapshot(chronos_ws / "vendor" / "chronos2")
    # the one added file: patchkit's runtime helpers, which the rewritten files import
    assert set(patched) - set(pristine) == {"chronos/_patchkit_helpers.py"}
    assert patched.pop("chronos/_patchkit_helpers.py") == helpers_source()
    assert set(pristine) == set(patched)
    changed = sorted(k for k in pristine if pristine[k] != patched[k])
    assert changed == sorted({f for step in patches.get("chronos2").steps for f in step.files})
    assert changed == ["chronos/chronos2/model.py", "chronos/chronos2/pipeline.py", "chronos/chronos_bolt.py"]


def test_check_and_diff_write_nothing(chronos_ws: Path, capsys):
    before = snapshot(chronos_ws)
    code, out, _ = run_cli(capsys, "--root", str(chronos_ws), "apply", "chronos2", "--diff")
    assert code == 0
    assert "+            if not torch.compiler.is_compiling() and torch.isnan(future_covariates).any():" in out
    code, out, _ = run_cli(capsys, "--root", str(chronos_ws), "apply", "chronos2", "--check")
    assert code == 0 and "up to date" in out
    assert snapshot(chronos_ws) == before
    target = chronos_ws / "vendor" / "chronos2" / "chronos" / "chronos2" / "model.py"
    target.write_text(target.read_text() + "\n# edited\n")
    edited = snapshot(chronos_ws)
    code, _, err = run_cli(capsys, "--root", str(chronos_ws), "apply", "chronos2", "--check")
    assert code == errors.EXIT_VERIFY_FAILED and "out of date" in err
    assert snapshot(chronos_ws) == edited


def test_hand_edited_patched_file_is_refused_then_forced(chronos_ws: Path, capsys):
    target = chronos_ws / "vendor" / "chronos2" / "chronos" / "utils.py"
    target.write_text(target.read_text() + "\nHAND_EDIT = 1\n")
    before = snapshot(chronos_ws)
    code, _, err = run_cli(capsys, "--root", str(chronos_ws), "apply", "chronos2")
    assert code == errors.EXIT_BAD_INPUT
    assert "chronos/utils.py" in err and "by hand" in err and err.count("\n") == 1
    assert snapshot(chronos_ws) == before
    code, _, _ = run_cli(capsys, "--root", str(chronos_ws), "apply", "chronos2", "--force")
    assert code == 0 and "HAND_EDIT" not in target.read_text()


def test_hand_edited_pristine_file_is_refused(chronos_ws: Path, capsys):
    target = chronos_ws / "vendor" / ".pristine" / "chronos2" / "chronos" / "chronos2" / "model.py"
    target.write_text(target.read_text().replace("raise ValueError", "raise TypeError", 1))
    (chronos_ws / "vendor" / "chronos2").rename(chronos_ws / "vendor" / "gone")
    before = snapshot(chronos_ws)
    code, _, err = run_cli(capsys, "--root", str(chronos_ws), "apply", "chronos2", "--force")
    assert code == errors.EXIT_BAD_INPUT and "does not match chronos2.lock.json" in err
    assert snapshot(chronos_ws) == before


def test_failed_apply_keeps_previous_tree(chronos_ws: Path, monkeypatch):
    tree = chronos_ws / "vendor" / "chronos2"
    (tree / "chronos" / "utils.py").unlink()  # make apply want to write
    lock = json.loads((chronos_ws / "vendor" / "chronos2.lock.json").read_text())
    lock.pop("patched")
    (chronos_ws / "vendor" / "chronos2.lock.json").write_text(json.dumps(lock))
    before = snapshot(chronos_ws)

    def boom(dest, files):
        (dest / "partial.py").parent.mkdir(parents=True, exist_ok=True)
        (dest / "partial.py").write_text("half written")
        raise OSError("disk full")

    monkeypatch.setattr(apply_mod, "write_tree", boom)
    with pytest.raises(OSError, match="disk full"):
        api.apply("chronos2", root=chronos_ws)
    assert snapshot(chronos_ws) == before
    assert not [p for p in (chronos_ws / "vendor").iterdir() if p.name.startswith(".staging")]


def test_interrupted_swap_is_recovered(chronos_ws: Path):
    vendor = chronos_ws / "vendor"
    (vendor / "chronos2").rename(vendor / ".previous-chronos2")  # crash between the two renames
    r = api.apply("chronos2", root=chronos_ws)
    assert r.up_to_date and not r.wrote
    assert (vendor / "chronos2" / "chronos" / "__init__.py").is_file()
    assert not (vendor / ".previous-chronos2").exists()


def test_unknown_model(tmp_path: Path, capsys):
    code, _, err = run_cli(capsys, "--root", str(tmp_path), "vendor", "prophet")
    assert code == errors.EXIT_BAD_INPUT and "unknown model 'prophet'" in err and "chronos2" in err
    assert not (tmp_path / "vendor").exists()


def test_apply_before_vendor(tmp_path: Path, capsys):
    code, _, err = run_cli(capsys, "--root", str(tmp_path), "apply", "chronos2")
    assert code == errors.EXIT_BAD_INPUT and "patchkit vendor chronos2" in err


def test_unknown_version(tmp_path: Path, capsys):
    code, _, err = run_cli(capsys, "--root", str(tmp_path), "vendor", "chronos2", "--version", "9.9.9")
    assert code == errors.EXIT_BAD_INPUT, err
    assert "no sdist for version '9.9.9'" in err and "2.3.2" in err
    assert not (tmp_path / "vendor" / "chronos2.lock.json").exists()
    assert not any((tmp_path / "vendor").glob("*/")) if (tmp_path / "vendor").exists() else True


def test_no_network(tmp_path: Path, capsys, monkeypatch):
    cfg = tmp_path / "pip.conf"
    cfg.write_text("[global]\nindex-url = http://127.0.0.1:9/simple\nretries = 0\ntimeout = 2\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(cfg))
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    ws = tmp_path / "ws"
    code, _, err = run_cli(capsys, "--root", str(ws), "vendor", "chronos2", "--version", "2.3.1")
    assert code == errors.EXIT_ENVIRONMENT, err
    assert "cannot reach the package index" in err
    assert not (ws / "vendor" / "chronos2.lock.json").exists()


def _tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


@pytest.mark.parametrize(
    "kind,expect",
    [
        ("garbage", "not a readable archive"),
        ("truncated", "not a readable archive"),
        ("traversal", "path traversal"),
        ("absolute", "path traversal"),
        ("symlink", "refusing link member"),
        ("empty", "contains none of the expected paths"),
    ],
)
def test_bad_archives_are_refused_and_nothing_written(tmp_path: Path, capsys, chronos_archive: Path, kind, expect):
    bad = tmp_path / "chronos_forecasting-2.3.2.tar.gz"
    if kind == "garbage":
        bad.write_bytes(b"this is not a tarball")
    elif kind == "truncated":
        bad.write_bytes(chronos_archive.read_bytes()[:50_000])
    elif kind == "traversal":
        _tar(bad, {"chronos_forecasting-2.3.2/src/chronos/x.py": b"x=1\n", "chronos_forecasting-2.3.2/../../evil.py": b"!"})
    elif kind == "absolute":
        _tar(bad, {"/etc/evil.py": b"!"})
    elif kind == "symlink":
        _tar(bad, {"chronos_forecasting-2.3.2/src/chronos/x.py": b"x=1\n"},
             {"chronos_forecasting-2.3.2/src/chronos/link.py": "/etc/passwd"})
    elif kind == "empty":
        _tar(bad, {"chronos_forecasting-2.3.2/README.md": b"hi"})
    ws = tmp_path / "ws"
    code, _, err = run_cli(capsys, "--root", str(ws), "vendor", "chronos2", "--archive", str(bad))
    assert code == errors.EXIT_BAD_INPUT, err
    assert expect in err
    assert not (ws / "vendor" / "chronos2.lock.json").exists()
    assert not (ws / "vendor" / ".pristine").exists()
    assert not (tmp_path / "evil.py").exists()


def test_archive_differing_from_lock_is_refused(chronos_ws: Path, tmp_path: Path, capsys):
    forged = _tar(tmp_path / "chronos_forecasting-2.3.2.tar.gz",
                  {"chronos_forecasting-2.3.2/src/chronos/__init__.py": b"# not what was locked\n"})
    before = snapshot(chronos_ws)
    code, _, err = run_cli(capsys, "--root", str(chronos_ws), "vendor", "chronos2", "--archive", str(forged))
    assert code == errors.EXIT_BAD_INPUT and "refusing a changed upstream archive" in err
    assert snapshot(chronos_ws) == before


def test_revendor_same_archive_is_a_noop(chronos_ws: Path, chronos_archive: Path, capsys):
    before = snapshot(chronos_ws)
    code, out, _ = run_cli(capsys, "--root", str(chronos_ws), "vendor", "chronos2", "--archive", str(chronos_archive))
    assert code == 0 and out.startswith("already vendored")
    assert snapshot(chronos_ws) == before


def test_drifted_codemod_fails_with_drift_code(chronos_ws: Path, capsys, monkeypatch):
    real = patches.get("chronos2")
    drifted = PatchSet(**{**real.__dict__, "steps": (
        Step("isnan-guard", ("chronos/chronos2/model.py",), {"functions": ["_prepare_patched_future_v3"]}),
    )})
    monkeypatch.setattr(patches, "get", lambda model: drifted)
    before = snapshot(chronos_ws)
    code, _, err = run_cli(capsys, "--root", str(chronos_ws), "apply", "chronos2", "--force")
    assert code == errors.EXIT_DRIFT
    assert "'isnan-guard' no longer applies" in err and "chronos/chronos2/model.py" in err
    assert "torch.isnan(...).any()" in err
    assert snapshot(chronos_ws) == before


def test_missing_file_is_drift(chronos_ws: Path, monkeypatch):
    real = patches.get("chronos2")
    moved = PatchSet(**{**real.__dict__, "steps": (Step("isnan-guard", ("chronos/chronos3/model.py",)),)})
    monkeypatch.setattr(patches, "get", lambda model: moved)
    with pytest.raises(errors.UpstreamDrift, match="no file matches chronos/chronos3/model.py"):
        api.apply("chronos2", root=chronos_ws)


def test_optional_step_matching_nothing_is_skipped(chronos_ws: Path, monkeypatch):
    real = patches.get("chronos2")
    optional = PatchSet(**{**real.__dict__, "steps": real.steps + (
        Step("isnan-guard", ("chronos/utils.py",), expect="optional"),)})
    monkeypatch.setattr(patches, "get", lambda model: optional)
    r = api.apply("chronos2", root=chronos_ws, check=True)
    assert [s.status for s in r.steps] == ["applied"] * len(real.steps) + ["skipped"]


def test_apply_parses_only_the_files_its_steps_name(chronos_ws: Path):
    """Why apply stays fast (timings live in benchmarks/, not in tests)."""
    r = api.apply("chronos2", root=chronos_ws, check=True)
    # one outcome per (step, named file): the 30-odd other files of the package are never parsed
    assert sum(len(s.outcomes) for s in r.steps) == sum(len(s.files) for s in patches.get("chronos2").steps) == 7


def test_sites_are_numbered_in_upstream_lines():
    """A later step's sites carry upstream's line numbers, not those of the text an earlier step lengthened."""
    from patchkit.apply import _run_step
    from patchkit.patchset import Step

    source = (
        "import torch\n\n\n"
        "class Table:\n"
        "    def __init__(self):\n"
        "        self._slot = torch.arange(4)\n\n"
        "    def slot(self, i):\n"
        "        return int(self._slot[i].item())\n\n\n"
        "def check(x):\n"
        "    if torch.isnan(x).any():\n"
        "        raise ValueError('nan')\n"
        "    return x\n"
    )
    pristine = {"m.py": source.encode()}
    files = dict(pristine)
    first = _run_step(Step("item-scalar", ("m.py",), {"tables": ["_slot"]}), files, pristine)
    second = _run_step(Step("isnan-guard", ("m.py",)), files, pristine)
    assert files["m.py"].decode().count("\n") > source.count("\n")  # the first step added lines above the guard
    upstream = source.splitlines()
    (item_site,) = first.outcomes[0].matches
    (nan_site,) = second.outcomes[0].matches
    assert "item()" in upstream[item_site.line - 1]
    assert "torch.isnan(x).any()" in upstream[nan_site.line - 1], nan_site


def test_upstream_lines_maps_rewritten_and_added_lines():
    from patchkit.apply import upstream_lines

    old = "a\nb\nc\nd\n"
    new = "a\nB1\nB2\nc\nadded\nd\n"
    lines = upstream_lines(old, new)
    assert lines[1:] == [1, 2, 2, 3, 3, 4]


_STEP_CALL = (
    "import torch\n\n\n"
    "def run(step, x):\n"
    "    return step(x)\n"
)


def _helpers_plan(files: dict[str, bytes]) -> apply_mod.Plan:
    ps = PatchSet(model="demo", title="demo", source=patches.get("chronos2").source, pin="1", known_versions=("1",),
                  steps=(Step("dynamic-step-inputs", ("pkg/sub/mod.py", "top.py"), {"function": "run", "calls": ["step"]}),),
                  harness="x:y", provides=("pkg",))
    return apply_mod.plan(ps, files, "1")


def test_runtime_helpers_are_copied_once_per_package_and_imported_relatively(tmp_path: Path, monkeypatch):
    """A rewritten file imports the helpers from its top-level package's copy (relative, so a renamed or vendored
    package still finds it); a top-level module imports the root copy absolutely.  The patched tree runs."""
    files = {"pkg/__init__.py": b"", "pkg/sub/__init__.py": b"", "pkg/sub/mod.py": _STEP_CALL.encode(),
             "top.py": _STEP_CALL.encode()}
    result = _helpers_plan(files)
    assert set(result.files) - set(files) == {"pkg/_patchkit_helpers.py", "_patchkit_helpers.py"}
    assert result.files["pkg/_patchkit_helpers.py"] == result.files["_patchkit_helpers.py"] == helpers_source()
    assert "from .._patchkit_helpers import _patchkit_mark_dynamic" in result.files["pkg/sub/mod.py"].decode()
    assert "from _patchkit_helpers import _patchkit_mark_dynamic" in result.files["top.py"].decode()
    for rel, data in result.files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import torch

    mod = importlib.import_module("pkg.sub.mod")
    assert mod._patchkit_mark_dynamic is importlib.import_module("pkg._patchkit_helpers")._patchkit_mark_dynamic
    x = torch.ones(2, 3)
    assert mod.run(lambda t: t * 2, x).tolist() == (x * 2).tolist()


def test_an_upstream_file_in_the_helpers_place_is_drift():
    files = {"pkg/__init__.py": b"", "pkg/_patchkit_helpers.py": b"# upstream's own\n",
             "pkg/sub/mod.py": _STEP_CALL.encode(), "top.py": b""}
    with pytest.raises(errors.UpstreamDrift, match="pkg/_patchkit_helpers.py"):
        _helpers_plan(files)
