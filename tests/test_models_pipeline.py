"""Toto (real wheel from the index) and Kronos (a local git repository) through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchkit import api, errors, patches
from patchkit.verify.upstream_tests import run_upstream_tests

from .conftest import run_cli, snapshot
from .kronos_repo import make_kronos_repo


@pytest.fixture(scope="module")
def kronos_ws(tmp_path_factory):
    repo = make_kronos_repo(tmp_path_factory.mktemp("kronos-repo"))
    root = tmp_path_factory.mktemp("kronos-ws")
    return root, repo


def test_toto_lock_and_patched_tree(toto_ws: Path):
    lock = json.loads((toto_ws / "vendor" / "toto.lock.json").read_text())
    assert lock["version"] == "0.2.0" and lock["source"]["dist"] == "wheel"
    assert "toto/test/inference/forecaster_test.py" in lock["files"]
    util = (toto_ws / "vendor" / "toto" / "toto" / "model" / "util.py").read_text()
    # compiled code reads the slot map from a host list; eager keeps upstream's .item() read
    assert ("(int(self._layer_cache_map_host[layer_idx]) if torch.compiler.is_compiling() "
            "else int(self._layer_cache_map[layer_idx].item()))") in util
    assert "index_copy_" in util


@pytest.mark.slow
def test_toto_verify(toto_ws: Path, tmp_path: Path, capsys):
    out = tmp_path / "toto.json"
    # the eager backend: Dynamo decides breaks and recompiles before any backend runs (the same counts as with
    # aot_eager, in half the time); verify's compiled forecast still runs inductor's code
    code, text, err = run_cli(capsys, "--root", str(toto_ws), "verify", "toto", "--logs", "graph_breaks,recompiles",
                              "--backend", "eager", "--json", str(out))
    rep = json.loads(out.read_text())
    assert code == 0, text + err
    up, pa = rep["upstream"], rep["patched"]
    assert up["graph_breaks"] >= 10 and up["recompiles"] >= 10
    assert any(s["site"].startswith("toto/model/util.py:") for s in up["break_sites"])
    assert pa["graph_breaks"] == 0 and pa["fullgraph_ok"] and pa["steady_state_ok"]
    assert pa["recompiles"] <= patches.get("toto").warmup_recompiles
    assert rep["mae"]["max_abs_pred_diff"] <= rep["mae"]["tolerance"]


@pytest.mark.slow
def test_toto_upstream_tests_on_patched_tree(toto_ws: Path):
    r = run_upstream_tests(toto_ws / "vendor" / "toto", patches.get("toto").upstream_tests)
    assert r.ok and r.passed >= 17, r.output_tail


def test_kronos_vendor_from_local_git_and_apply(kronos_ws, capsys):
    root, repo = kronos_ws
    code, out, err = run_cli(capsys, "--root", str(root), "vendor", "kronos", "--from", str(repo.path), "--ref",
                             repo.commits[-1])
    assert code == 0, err
    lock = json.loads((root / "vendor" / "kronos.lock.json").read_text())
    assert lock["version"] == repo.commits[-1] and lock["source"]["kind"] == "git"
    # nothing from finetune_csv/data; the licence and requirements kept aside for `patchkit build`
    assert all(rel.startswith("model/") for rel in lock["files"] if not rel.startswith(".upstream/"))
    assert sorted(rel for rel in lock["files"] if rel.startswith(".upstream/")) == [".upstream/LICENSE",
                                                                                     ".upstream/requirements.txt"]
    code, out, err = run_cli(capsys, "--root", str(root), "apply", "kronos")
    assert code == 0, err
    module = (root / "vendor" / "kronos" / "model" / "module.py").read_bytes()
    assert b"\r\n" in module and b"\n" not in module.replace(b"\r\n", b"")  # CRLF kept


@pytest.mark.parametrize("args,code,words", [
    (["--from", "{tmp}"], errors.EXIT_BAD_INPUT, "not a git repository"),
    (["--from", "{repo}", "--ref", "0123abc"], errors.EXIT_BAD_INPUT, "is not a branch, tag or commit"),
    (["--from", "https://127.0.0.1:9/kronos.git"], errors.EXIT_ENVIRONMENT, "cannot clone"),
])
def test_kronos_vendor_errors_write_nothing(kronos_ws, tmp_path: Path, capsys, args, code, words):
    _, repo = kronos_ws
    ws = tmp_path / "ws"
    argv = [a.format(tmp=tmp_path, repo=repo.path) for a in args]
    got, _, err = run_cli(capsys, "--root", str(ws), "vendor", "kronos", *argv)
    assert got == code and words in err and err.count("\n") == 1
    assert not ws.exists() or snapshot(ws) == {}


@pytest.mark.slow
def test_kronos_verify_on_local_repo(kronos_ws, tmp_path: Path, capsys):
    root, repo = kronos_ws
    api.vendor("kronos", repo.commits[-1], root=root, archive=str(repo.path))
    api.apply("kronos", root=root)
    out = tmp_path / "k.json"
    code, text, err = run_cli(capsys, "--root", str(root), "verify", "kronos", "--logs", "recompiles",
                              "--backend", "eager", "--json", str(out))
    rep = json.loads(out.read_text())
    assert code == 0, text + err
    assert rep["upstream"]["recompiles"] >= 8 and rep["upstream"]["recompile_limit_hit"]
    pa = rep["patched"]
    assert pa["graph_breaks"] == 0 and not pa["recompile_limit_hit"] and pa["steady_state_ok"]


def test_kronos_upgrade_check_between_two_commits(kronos_ws, capsys):
    root, repo = kronos_ws
    code, out, err = run_cli(capsys, "--root", str(root), "upgrade-check", "kronos", "--from", str(repo.path),
                             "--matrix", "--to", repo.commits[0], "--to", repo.commits[1], "--no-verify")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith(tuple(c[:12] for c in repo.commits))]
    assert len(rows) == 2 and all("applied" in r and "safe" in r for r in rows)
