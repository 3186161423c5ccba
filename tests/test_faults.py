"""Fault injection: bad input and environment faults, driven through the CLI.

Each case asserts the exit code, exactly one line on stderr, no traceback,
and that nothing is left behind: no staging or half-swapped folder in vendor/,
no package or empty folder from a failed export, no temporary folder
(every test runs with a private, checked-empty ``TMPDIR``).  Nothing here
compiles a model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from patchkit import api, errors
from patchkit.cli import _hoist_global_flags, _interrupted

from .conftest import REPO, run_cli

PATCHKIT = [sys.executable, "-m", "patchkit.cli"]


# -- fixtures and the shared assertions ---------------------------------------------------------------------
@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    """A private TMPDIR (for subprocesses too) and patchkit cache; it must be empty again after each test."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("PATCHKIT_CACHE", str(tmp_path / "cache"))
    yield tmp
    # torchinductor_USER is torch's own compile cache, kept on purpose; anything else is a leftover
    left = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_"))
    assert left == [], f"temporary files left behind: {left}"


@pytest.fixture(scope="module")
def chronos_applied(chronos_patched, tmp_path_factory) -> Path:
    """chronos2 vendored and patched (shared: copy it with ``copy_ws`` before changing anything)."""
    return copy_ws(chronos_patched, tmp_path_factory.mktemp("faults-chronos"))


def copy_ws(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(src, dest)
    return dest


def one_error_line(code: int, err: str, want: int, *words: str) -> str:
    assert code == want, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("patchkit: error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def no_leftovers(root: Path) -> None:
    vendor = root / "vendor"
    if vendor.exists():
        odd = [p.name for p in vendor.rglob("*") if p.name.startswith((".staging-", ".previous-"))]
        assert odd == [], odd


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- the exit-code table ------------------------------------------------------------------------------------
def _all_error_classes():
    import patchkit.aot  # noqa: F401 - the error classes defined beside their code
    import patchkit.compile_cache  # noqa: F401
    import patchkit.distribute  # noqa: F401

    seen, todo = set(), [errors.PatchkitError]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo.extend(cls.__subclasses__())
    return seen


def test_every_exit_code_is_in_the_readme_table():
    text = (REPO / "README.md").read_text()
    section = re.search(r"^#+ Exit codes\n(.*?)(?=^#|\Z)", text, re.S | re.M).group(1)
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)}
    returned = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    returned |= {cls.exit_code for cls in _all_error_classes() if isinstance(cls.exit_code, int)}
    returned |= set(errors.EXIT_CODES)
    assert returned - documented == set(), f"exit codes missing from the README table: {returned - documented}"
    assert documented - returned == set(), f"README documents codes patchkit never returns: {documented - returned}"


# -- --weights, --device, --logs, --tolerance, compiler: refused before any run --------------------------
@pytest.mark.parametrize("model", ["chronos2", "toto", "kronos"])
@pytest.mark.parametrize("shape,words", [
    ("empty", "holds no config.json"),
    ("bad-json", "is not valid JSON (Expecting value at line 1, column 1)"),
    ("json-list", "holds a JSON list, not an object"),
    ("no-weights", "holds no weights file"),
])
def test_bad_weights_folder_is_exit_2(tmp_path, capsys, model, shape, words):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    if shape == "bad-json":
        (folder / "config.json").write_text("not json")
    elif shape == "json-list":
        (folder / "config.json").write_text("[]")
    elif shape == "no-weights":
        (folder / "config.json").write_text("{}")
    weights = f"{folder},{folder}" if model == "kronos" else str(folder)
    code, out, err = run_cli(capsys, "--root", str(tmp_path / "ws"), "verify", model, "--weights", weights)
    one_error_line(code, err, errors.EXIT_BAD_INPUT, words)
    assert out == "" and not (tmp_path / "ws").exists()


def test_kronos_weights_take_two_folders(tmp_path, capsys):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    code, _, err = run_cli(capsys, "--root", str(tmp_path), "verify", "kronos", "--traffic", "--weights", str(folder))
    one_error_line(code, err, errors.EXIT_BAD_INPUT, "MODEL_DIR,TOKENIZER_DIR", "got 1")


@pytest.mark.parametrize("args,want,words", [
    (["--device", "tpu"], 2, "--device 'tpu'"),
    (["--traffic", "--device", "tpu"], 2, "--device 'tpu'"),
    (["--logs", "bogus_artifact"], 2, "unknown TORCH_LOGS artifact(s) bogus_artifact"),
    (["--traffic", "--logs", "graph_breaks,bogus_artifact"], 2, "bogus_artifact"),
    (["--tolerance", "-1"], 2, "--tolerance -1"),
    (["--tolerance", "nan"], 2, "--tolerance nan"),
    (["--size", "huge"], 2, "Invalid value for '--size'"),
])
def test_verify_options_checked_up_front(tmp_path, capsys, args, want, words):
    code, out, err = run_cli(capsys, "--root", str(tmp_path), "verify", "chronos2", *args)
    one_error_line(code, err, want, words)
    assert out == ""


def test_no_compiler_is_exit_3(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CXX", raising=False)
    for cmd in (["verify", "chronos2"], ["verify", "chronos2", "--traffic"], ["export", "chronos2"],
                ["cache", "warm", "chronos2"]):
        code, _, err = run_cli(capsys, "--root", str(tmp_path), *cmd)
        one_error_line(code, err, errors.EXIT_ENVIRONMENT, "no C++ compiler", "'g++'")
    assert not (tmp_path / "dist").exists()


def test_compiler_failure_inside_a_runner_is_exit_3():
    line = errors.failure_line(RuntimeError("torch._inductor.exc.InvalidCxxCompiler: No working C++ compiler "
                                            "found in torch._inductor.config.cpp.cxx: (None, 'g++')"))
    failure = errors.subprocess_failure("verify run of patched (chronos2)", 3, "noise\n" + line + "\n", "t")
    assert failure.exit_code == errors.EXIT_ENVIRONMENT and "C++ compiler" in str(failure)
    assert "log: " in str(failure) and "\n" not in str(failure)


# -- subprocess failures: typed, one line, the runner's exit code --------------------------------------------
def test_checkpoint_that_does_not_load_is_exit_2_from_the_runner(toto_ws, tmp_path, capsys):
    """The folder passes the up-front check, the upstream's loader refuses it in the runner subprocess."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    code, out, err = run_cli(capsys, "--root", str(toto_ws), "verify", "toto", "--weights", str(folder),
                             "--backend", "eager")
    line = one_error_line(code, err, errors.EXIT_BAD_INPUT, f"--weights {folder}", "checkpoint does not load")
    log = Path(re.search(r"\(log: ([^)]+)\)", line).group(1))
    assert "Traceback" in log.read_text()  # the traceback is kept, not shown
    assert out == ""


def test_runner_without_a_typed_line_is_internal_with_a_log():
    failure = errors.subprocess_failure("export of the patched toto", 1, "Fatal Python error: Aborted\n", "t")
    assert failure.exit_code == errors.EXIT_INTERNAL and "Fatal Python error" in str(failure)
    assert errors.subprocess_failure("x", -15, "", "t").exit_code == errors.EXIT_INTERRUPTED
    assert errors.subprocess_failure("x", -11, "", "t").exit_code == errors.EXIT_INTERNAL


def _fake_package(path: Path, ws: Path, model: str = "chronos2") -> Path:
    """A .pt2 whose record is right for this workspace and whose program library is zeroed bytes."""
    import torch

    from patchkit.provenance import patch_hash

    lock = api.workspace(ws).read_lock(model)
    record = {"format": 1, "model": model, "torch": torch.__version__, "patch_hash": patch_hash(lock),
              "device": "cpu", "size": "tiny", "programs": {"model": {"ranges": {}, "static": {}}}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{path.stem}/extra/patchkit.json", json.dumps(record))
        zf.writestr(f"{path.stem}/data/aotinductor/model/model.wrapper.so", b"\0" * 4096)
        zf.writestr(f"{path.stem}/version", "0")
    return path


@pytest.mark.parametrize("command", ["bench", "verify"])
def test_damaged_package_library_is_corrupt_package_exit_2(chronos_applied, tmp_path, capsys, command):
    pkg = _fake_package(tmp_path / "x.pt2", chronos_applied)
    code, out, err = run_cli(capsys, "--root", str(chronos_applied), "-q", command, "chronos2", "--aot", str(pkg),
                             "--calls", "2")
    one_error_line(code, err, errors.EXIT_BAD_INPUT, "its programs do not load")
    # the loader's aotinductor_* unpack folder in TMPDIR is removed: the autouse fixture checks it is empty


# -- the file system, locks -------------------------------------------------------------------------------
def test_read_only_vendor_during_apply_is_exit_3(chronos_vendored, tmp_path, capsys, monkeypatch):
    root = copy_ws(chronos_vendored, tmp_path)
    before = snapshot(root)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr("patchkit.workspace.os.rename", refuse)
    code, _, err = run_cli(capsys, "--root", str(root), "apply", "chronos2")
    one_error_line(code, err, errors.EXIT_ENVIRONMENT, "Permission denied", "vendor")
    assert snapshot(root) == before
    no_leftovers(root)


def test_read_only_vendor_during_vendor_is_exit_3(chronos_vendored, tmp_path, capsys, monkeypatch):
    root = copy_ws(chronos_vendored, tmp_path)
    (root / "vendor" / ".pristine" / "chronos2" / "extra.txt").write_text("x")  # so vendor has to write
    before = snapshot(root)

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(root / "vendor"))

    monkeypatch.setattr("patchkit.workspace.tempfile.mkdtemp", refuse)
    code, _, err = run_cli(capsys, "--root", str(root), "vendor", "chronos2")
    one_error_line(code, err, errors.EXIT_ENVIRONMENT, "Read-only file system")
    assert snapshot(root) == before


@pytest.mark.parametrize("text,words", [
    ("[]", "a lock is a JSON object, this is a JSON list"),
    ("{}", "lock format None"),
    ('{"format": 99}', "lock format 99"),
    ("{not json", "is not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)"),
    ('{"format', "is not valid JSON (Unterminated string starting at line 1, column 2)"),
])
def test_lock_of_the_wrong_shape_is_exit_2_naming_the_fix(chronos_vendored, tmp_path, capsys, text, words):
    root = copy_ws(chronos_vendored, tmp_path)
    (root / "vendor" / "chronos2.lock.json").write_text(text)
    for cmd in (["apply", "chronos2"], ["verify", "chronos2"], ["list"]):
        code, _, err = run_cli(capsys, "--root", str(root), *cmd)
        one_error_line(code, err, errors.EXIT_BAD_INPUT, words, "`patchkit vendor chronos2` rewrites it")
    assert " at at " not in err
    no_leftovers(root)


# -- a hand-edited tree names the command that fixes it -------------------------------------------------
def test_hand_edited_patched_tree_names_apply_force(chronos_applied, tmp_path, capsys):
    root = copy_ws(chronos_applied, tmp_path)
    edited = next((root / "vendor" / "chronos2").rglob("*.py"))
    edited.write_text(edited.read_text() + "\n# local change\n")
    for cmd in (["apply", "chronos2"], ["verify", "chronos2"], ["build", "chronos2"], ["install", "chronos2"]):
        code, _, err = run_cli(capsys, "--root", str(root), *cmd)
        one_error_line(code, err, errors.EXIT_BAD_INPUT, "`patchkit apply chronos2 --force` restores it")
    assert not (root / "dist").exists()
    code, out, err = run_cli(capsys, "--root", str(root), "apply", "chronos2", "--force")
    assert code == 0 and "# local change" not in edited.read_text(), err


def test_hand_edited_pristine_tree_names_vendor_refresh(chronos_applied, tmp_path, capsys):
    root = copy_ws(chronos_applied, tmp_path)
    edited = next((root / "vendor" / ".pristine" / "chronos2").rglob("*.py"))
    edited.write_text(edited.read_text() + "\n# local change\n")
    code, _, err = run_cli(capsys, "--root", str(root), "apply", "chronos2")
    one_error_line(code, err, errors.EXIT_BAD_INPUT, "`patchkit vendor chronos2 --refresh`")


# -- verify: the verdict comes first; the tolerance rule ------------------------------------------------
def _canned_verify(monkeypatch, ok: bool = True):
    """verify without running a model: the runners' part replaced by a fixed report."""
    from patchkit.verify import report as rep

    def variant(label: str, breaks: int) -> rep.VariantReport:
        return rep.VariantReport(label, "tree", breaks, breaks, 0, 1, True, "", False, True, "", [], [],
                                 {"workload": "w", "weights": "seeded"})

    def fake(ps, up, pa, version, **kwargs):
        mae = rep.MaeReport(0.1, 0.1, 0.0, 0.0, kwargs.get("tolerance") or ps.mae_tolerance, "m", [])
        return rep.VerifyReport(ps.model, "2.13.0", version, "cpu", "inductor", variant("upstream", 3),
                                variant("patched", 0), mae, ok, [] if ok else ["forecast drift"]), {}

    monkeypatch.setattr("patchkit.api.verify_trees", fake)


def test_unwritable_json_prints_the_verdict_then_fails_on_the_write(chronos_applied, tmp_path, capsys, monkeypatch):
    _canned_verify(monkeypatch)
    target = tmp_path / "reports" / "v.json"
    target.parent.mkdir()

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("patchkit.api.write_report", refuse)
    root = copy_ws(chronos_applied, tmp_path)
    code, out, err = run_cli(capsys, "--root", str(root), "verify", "chronos2", "--json", str(target))
    one_error_line(code, err, errors.EXIT_ENVIRONMENT, "Permission denied", str(target))
    assert out.rstrip().endswith("OK") and "3" in out  # the verdict was printed before the write failed


def test_read_only_verdict_record_prints_the_verdict_then_exit_3(chronos_applied, tmp_path, capsys, monkeypatch):
    _canned_verify(monkeypatch)

    def refuse(path, text):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr("patchkit.verdicts.atomic_write_text", refuse)
    code, out, err = run_cli(capsys, "--root", str(chronos_applied), "verify", "chronos2")
    one_error_line(code, err, errors.EXIT_ENVIRONMENT, "Read-only file system", ".verify")
    assert out.rstrip().endswith("OK")


def test_json_into_a_missing_folder_is_exit_2_after_the_verdict(chronos_applied, tmp_path, capsys, monkeypatch):
    _canned_verify(monkeypatch)
    root = copy_ws(chronos_applied, tmp_path)
    code, out, err = run_cli(capsys, "--root", str(root), "verify", "chronos2", "--json",
                             str(tmp_path / "no" / "such" / "v.json"))
    one_error_line(code, err, errors.EXIT_BAD_INPUT, "does not exist")
    assert "OK" in out and not (tmp_path / "no").exists()


def test_verdict_under_another_tolerance_gates_nothing(chronos_applied, tmp_path, capsys, monkeypatch):
    from patchkit.verdicts import verdict_path

    root = copy_ws(chronos_applied, tmp_path)
    path = verdict_path(api.workspace(root), "chronos2")
    _canned_verify(monkeypatch, ok=False)
    code, _, _ = run_cli(capsys, "--root", str(root), "verify", "chronos2", "--tolerance", "0.5")
    assert code == errors.EXIT_VERIFY_FAILED and not path.exists()
    code, _, _ = run_cli(capsys, "--root", str(root), "verify", "chronos2")
    assert code == errors.EXIT_VERIFY_FAILED and json.loads(path.read_text())["fixed"]["ok"] is False
    _canned_verify(monkeypatch, ok=True)
    code, _, _ = run_cli(capsys, "--root", str(root), "verify", "chronos2", "--tolerance", "0.5")
    assert code == 0 and json.loads(path.read_text())["fixed"]["ok"] is False  # not unblocked either


# -- vendor: offline re-runs, versions, leftovers, wording -----------------------------------------------
OFFLINE = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_CACHE_DIR": "1", "PIP_RETRIES": "0",
           "PIP_TIMEOUT": "2"}


def test_vendor_rerun_is_a_noop_offline(chronos_vendored, tmp_path, capsys, monkeypatch):
    root = copy_ws(chronos_vendored, tmp_path)
    before = snapshot(root)
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    code, out, err = run_cli(capsys, "--root", str(root), "vendor", "chronos2")
    assert code == 0 and out.startswith("already vendored chronos2 2.3.2"), err
    assert snapshot(root) == before
    code, _, err = run_cli(capsys, "--root", str(root), "vendor", "chronos2", "--refresh")
    one_error_line(code, err, errors.EXIT_ENVIRONMENT, "package index")
    assert snapshot(root) == before
    no_leftovers(root)


def test_kronos_rerun_is_a_noop_without_its_remote(kronos_ws, tmp_path, capsys):
    root = copy_ws(kronos_ws, tmp_path)
    lock = api.workspace(root).read_lock("kronos")
    before = snapshot(root)
    code, out, err = run_cli(capsys, "--root", str(root), "vendor", "kronos", "--ref", lock["version"])
    assert code == 0 and out.startswith("already vendored kronos"), err
    assert snapshot(root) == before


def test_kronos_clone_failure_names_from_and_the_variable(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--root", str(tmp_path / "ws"), "vendor", "kronos", "--from",
                           "http://127.0.0.1:9/Kronos.git")
    one_error_line(code, err, errors.EXIT_ENVIRONMENT, "--from PATH", "PATCHKIT_KRONOS_FROM")
    assert not (tmp_path / "ws" / "vendor").exists()


def test_kronos_from_a_local_mirror_says_so(tmp_path, capsys):
    from .kronos_repo import make_kronos_repo

    repo = make_kronos_repo(tmp_path / "mirror")
    code, out, err = run_cli(capsys, "--root", str(tmp_path / "ws"), "vendor", "kronos", "--from", str(repo.path),
                             "--ref", repo.commits[-1])
    assert code == 0, err
    assert f"from git {repo.path} @" in out and "a copy of https://github.com/" in out


@pytest.mark.parametrize("args,words", [
    (["vendor", "chronos2", "--version", "notaversion"], "--version 'notaversion' is not a PEP 440 version"),
    (["vendor", "toto", "--version", "1.2.3.x"], "not a PEP 440 version"),
    (["upgrade-check", "chronos2", "--to", "notaversion"], "--to 'notaversion' is not a PEP 440 version"),
    (["vendor", "kronos", "--from", "/nonexistent"], "/nonexistent: no such directory"),
])
def test_bad_versions_and_sources_are_exit_2_every_time(tmp_path, capsys, args, words):
    for _ in range(2):
        code, _, err = run_cli(capsys, "--root", str(tmp_path / "ws"), *args)
        one_error_line(code, err, errors.EXIT_BAD_INPUT, words)
    assert not (tmp_path / "ws" / "vendor").exists()


def test_export_into_a_missing_folder_creates_nothing(chronos_applied, tmp_path, capsys):
    out = tmp_path / "nonexistent" / "dir" / "x.pt2"
    code, _, err = run_cli(capsys, "--root", str(chronos_applied), "export", "chronos2", "--out", str(out))
    one_error_line(code, err, errors.EXIT_BAD_INPUT, "does not exist")
    assert not (tmp_path / "nonexistent").exists() and not (chronos_applied / "dist").exists()


# -- report -------------------------------------------------------------------------------------------------
def _plain(model: str, ok: bool = True) -> dict:
    v = {"graph_breaks": 0, "recompiles": 0, "fullgraph_ok": True}
    return {"model": model, "upstream_version": "1.0", "torch_version": "2.13.0+cpu", "ok": ok,
            "upstream": {**v, "graph_breaks": 2}, "patched": v, "mae": {"abs_diff": 0.0}}


def _traffic(model: str) -> dict:
    v = {"graphs": 2, "recompile_limit_hit": False, "steady_ok": True, "units": [{"name": "m", "graphs": 2,
                                                                                   "budget": 2}]}
    return {"model": model, "size": "tiny", "calls": [{}], "torch_version": "2.13.0+cpu", "ok": True,
            "upstream": {**v, "graphs": 9}, "patched": v, "fidelity": []}


def _aot(model: str) -> dict:
    return {"model": model, "package": "/x/chronos2-tiny-cpu.pt2", "size": "tiny", "calls": [{}, {}],
            "programs": {}, "program_calls": {}, "refused": [], "call_errors": [], "torch_version": "2.13.0+cpu",
            "fidelity": [{"worst_rel": 1e-7, "ok": True}], "ok": True}


def test_report_reads_every_kind_mixed(tmp_path, capsys):
    files = {"a.verify.json": _plain("alpha"), "a.traffic.json": _traffic("alpha"), "a.aot.json": _aot("alpha"),
             "u.json": {"model": "toto", "pinned": "0.2.0", "target": "0.3.0", "verdict": "safe", "steps": [],
                        "exit_code": 0, "torch_version": "2.13.0+cpu"}}
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
    code, out, err = run_cli(capsys, "report", *sorted(str(p) for p in tmp_path.glob("*.json")))
    assert code == 0, err
    for kind in ("[verify]", "[traffic]", "[aot]", "[upgrade]"):
        assert kind in out
    assert "2 -> 0" in out and "9 -> 2" in out and "chronos2-tiny-cpu.pt2" in out and "safe" in out
    (tmp_path / "b.traffic.json").write_text(json.dumps({**_traffic("beta"), "ok": False}))
    code, out, _ = run_cli(capsys, "report", str(tmp_path / "a.verify.json"), str(tmp_path / "b.traffic.json"))
    assert code == errors.EXIT_VERIFY_FAILED and "FAILED" in out


@pytest.mark.parametrize("content,words", [
    ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)"),
    ("{}", "not a patchkit report (a JSON dict without the fields of any report)"),
    ("[1, 2]", "not a patchkit report (a JSON list)"),
    ('"text"', "not a patchkit report (a JSON str)"),
    (json.dumps({**_plain("x"), "patched": {"graph_breaks": 0}}), "a verify report without its"),
    (None, "a directory, not a report"),
])
def test_report_refuses_a_file_naming_it(tmp_path, capsys, content, words):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_plain("alpha")))
    bad = tmp_path / "bad.json"
    if content is None:
        bad.mkdir()
    else:
        bad.write_text(content)
    code, out, err = run_cli(capsys, "report", str(good), str(bad))
    one_error_line(code, err, errors.EXIT_BAD_INPUT, str(bad), words)
    assert out == ""


# -- the boundary itself ------------------------------------------------------------------------------------
def test_internal_error_is_one_line_naming_its_log(tmp_path, capsys, monkeypatch):
    def boom():
        raise RuntimeError("x" * 5000 + "\nsecond line")

    monkeypatch.setattr("patchkit.api.list_models", boom)
    code, _, err = run_cli(capsys, "list")
    line = one_error_line(code, err, errors.EXIT_INTERNAL, "internal error: RuntimeError", "patchkit -v")
    assert len(line) < 1200 and "second line" not in line
    log = Path(re.search(r"traceback in (\S+);", line).group(1))
    assert "RuntimeError" in log.read_text() and "Traceback" in log.read_text()
    code, _, err = run_cli(capsys, "list", "-v")  # -v after the command shows the traceback
    assert code == errors.EXIT_INTERNAL and "Traceback" in err


def test_verbose_and_quiet_are_accepted_after_the_command():
    assert _hoist_global_flags(["verify", "chronos2", "-v", "--logs", "x"]) == ["-v", "verify", "chronos2",
                                                                                 "--logs", "x"]
    assert _hoist_global_flags(["report", "a", "-q", "--", "-v"]) == ["-q", "report", "a", "--", "-v"]


def test_an_interrupt_wrapped_by_a_library_is_still_an_interrupt(tmp_path, capsys, monkeypatch):
    def wrapped(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise ValueError("node " + "Module(body=[...])" * 100000) from err

    monkeypatch.setattr("patchkit.api._apply", wrapped)
    code, _, err = run_cli(capsys, "--root", str(tmp_path), "apply", "chronos2")
    one_error_line(code, err, errors.EXIT_INTERRUPTED, "interrupted")
    assert len(err) < 200
    assert _interrupted(ValueError()) is False


def test_sigterm_during_verify_leaves_nothing(toto_ws, tmp_path, private_tmp):
    """A real signal to the CLI process while its runners work: exit 130, one line, no temporary folder."""
    env = {**os.environ, "TMPDIR": str(private_tmp)}
    verdicts = snapshot(toto_ws / "vendor")
    proc = subprocess.Popen([*PATCHKIT, "--root", str(toto_ws), "verify", "toto", "--backend", "eager"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not any(private_tmp.glob("patchkit-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    one_error_line(proc.returncode, err, errors.EXIT_INTERRUPTED, "interrupted")
    assert snapshot(toto_ws / "vendor") == verdicts  # a stopped run records no verdict and leaves no staging


def test_sigterm_during_export_leaves_no_partial_package(chronos_applied, tmp_path, private_tmp):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {**os.environ, "TMPDIR": str(private_tmp)}
    proc = subprocess.Popen([*PATCHKIT, "--root", str(chronos_applied), "export", "chronos2", "--out",
                             str(out_dir / "x.pt2")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not any(private_tmp.glob("patchkit-export-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    assert [p.name for p in out_dir.iterdir() if p.name.endswith(".pt2.partial")]  # the run is under way
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    one_error_line(proc.returncode, err, errors.EXIT_INTERRUPTED, "interrupted")
    assert list(out_dir.iterdir()) == [] and not (chronos_applied / "dist").exists()


def test_progress_only_on_a_terminal_and_not_quiet(capsys, monkeypatch):
    from patchkit.cli import Options

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    Options(Path("."), False).progress()("chronos2 upstream: workload")
    assert capsys.readouterr().err == "... chronos2 upstream: workload (0 s)\n"
    Options(Path("."), False, quiet=True).progress()("x")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    Options(Path("."), False).progress()("x")
    assert capsys.readouterr().err == ""
