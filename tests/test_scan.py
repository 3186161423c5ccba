"""``patchkit scan --static``: each hazard kind on a fixture of our own, look-alikes left out, and on the three
real pristine trees every site the patch sets fix that a matcher can see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchkit import api, patches
from patchkit.codemods import REGISTRY
from patchkit.errors import EXIT_BAD_INPUT
from patchkit.scan import KINDS, scan_source, scan_tree

from .conftest import FIXTURES, run_cli

HAZARDS = FIXTURES / "scan" / "hazards.py"
#: the codemods whose hazards the static pass can see: every lock site of these must be found
STATIC = {"isnan-guard", "branch-free-pad", "item-scalar", "rope-static-cache", "mark-growing-dynamic"}


def _found() -> dict[int, tuple[str, str | None]]:
    return {f.line: (f.kind, f.codemod) for f in scan_source(HAZARDS.read_text(), "hazards.py")}


def test_each_kind_once_per_site_with_its_codemod() -> None:
    lines = HAZARDS.read_text().splitlines()
    found = _found()
    expected = {}
    for i, line in enumerate(lines, 1):
        for kind in KINDS:
            if f"# {kind}" in line or f"): {kind}" in line or f": {kind} (" in line:
                expected[i] = kind
    assert {line: kind for line, (kind, _) in found.items()} == expected
    by_line = {lines[i - 1].strip().split("#")[0].strip(): c for i, (_, c) in found.items()}
    assert by_line["self.len_cached = n"] == "rope-static-cache"
    assert by_line["self.table = torch.arange(n)"] is None
    assert by_line["if length % 8 != 0:"] == "branch-free-pad"
    assert by_line["if torch.isnan(x).any():"] == "isnan-guard"
    assert by_line["if (x > 0).all():"] is None
    assert by_line["return int(self.slots[i].item())"] == "item-scalar"
    assert by_line["return self.filled.sum().item()"] is None
    assert by_line["x = torch.cat([x, y[:, -1:]], dim=-1)"] == "mark-growing-dynamic"
    assert {c for _, c in found.values() if c} <= set(REGISTRY)


def test_cli_scans_a_folder_and_writes_json_and_markdown(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src" / "pkg"
    src.mkdir(parents=True)
    (src / "model.py").write_text(HAZARDS.read_text())
    (src / "tests").mkdir()
    (src / "tests" / "test_model.py").write_text("import torch\n\ndef f(x):\n    return x.item()\n")
    code, out, err = run_cli(capsys, "scan", str(tmp_path / "src"), "--static", "--json", str(tmp_path / "s.json"),
                             "--markdown", str(tmp_path / "s.md"))
    assert code == 0, err
    assert "1 Python files scanned (1 test files skipped)" in out and "pkg/model.py:" in out
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["files"] == 1 and data["skipped"] == 1
    assert sum(data["kinds"].values()) == len(data["findings"]) == len(_found())
    assert (tmp_path / "s.md").read_text().count("| pkg/model.py:") == len(_found())


@pytest.mark.parametrize("args,needle", [
    (("scan", "somewhere"), "not a registered model"),
    (("scan", "no/such/folder", "--static"), "no such folder"),
    (("scan", "toto", "--static"), "`patchkit vendor toto`"),
    (("scan", ".", "--static", "--patched"), "--patched is for a registered model"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "--root", str(tmp_path), *args)
    assert code == EXIT_BAD_INPUT and needle in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_a_file_that_does_not_parse_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    with pytest.raises(Exception, match="broken.py"):
        scan_tree(tmp_path)


def _lock_sites(model: str) -> list[tuple[str, str, int]]:
    lock = json.loads((Path(__file__).resolve().parents[1] / "vendor" / f"{model}.lock.json").read_text())
    return [(step["codemod"], site.rsplit(":", 1)[0], int(site.rsplit(":", 1)[1]))
            for step in lock["patched"]["steps"] if step["codemod"] in STATIC for site in step["sites"]]


def _check_pristine(model: str, tree: Path) -> None:
    """Every lock site of a statically visible codemod has a finding of that codemod in the same file and
    function (within the function's lines: the lock numbers the construct the codemod matched)."""
    result = scan_tree(tree)
    sites = _lock_sites(model)
    assert sites, f"{model}: the patch set fixes nothing the static pass could see"
    for codemod, path, line in sites:
        near = [f for f in result.findings if f.codemod == codemod and f.path == path and abs(f.line - line) <= 30]
        assert near, f"{model}: no {codemod} finding near {path}:{line}"


@pytest.mark.slow
def test_pristine_chronos2_and_toto_name_the_sites_their_patch_sets_fix(chronos_vendored: Path, toto_ws: Path):
    _check_pristine("chronos2", chronos_vendored / "vendor" / ".pristine" / "chronos2")
    _check_pristine("toto", toto_ws / "vendor" / ".pristine" / "toto")
    assert patches.get("kronos")  # Kronos: the pinned tree is not reachable here; its rope site is checked below


def test_a_kronos_shaped_rope_cache_is_found(tmp_path: Path) -> None:
    """The Kronos-shaped repository the tests build (tests/kronos_repo.py) keeps the rotary cache written in
    forward; the scan names it for rope-static-cache, as the pinned upstream's lock does."""
    from .kronos_repo import MODULE_PY

    found = scan_source(MODULE_PY, "model/module.py")
    assert any(f.kind == "module-state-write" and f.codemod == "rope-static-cache" for f in found), found


# -- the dynamic pass: Dynamo's log of a traffic run, read into hazards ----------------------------------------
def _dynamic(tmp_path: Path):
    from patchkit.dynamic_scan import analyse

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hazards.py").write_text(HAZARDS.read_text())
    log = (FIXTURES / "scan" / "traffic.log").read_text().replace("TREE", str(tree))
    return analyse(log, tree, list(scan_tree(tree).findings))


def test_dynamic_hazards_once_each_with_calls_codemod_and_the_static_sites_they_confirm(tmp_path: Path) -> None:
    hazards, confirmed = _dynamic(tmp_path)
    got = {(h.kind, h.site): (h.calls, h.codemod, h.count) for h in hazards}
    assert got == {
        ("data-dependent-branch", "hazards.py:26"): ([0, 1], "isnan-guard", 2),  # confirmed: the static codemod
        ("host-sync", "hazards.py:41"): ([0], "item-scalar", 1),  # the reason on the line after the first
        ("size-1-specialisation", "hazards.py:19"): ([1, 2], "pad-single-row", 2),  # one guard, two calls
        ("shape-branch", "hazards.py:23"): ([2], "branch-free-pad", 1),  # the guard's own user line
        ("module-state", "hazards.py:13"): ([2], "rope-static-cache", 1),  # the write in the same function
        ("recompile-limit", "hazards.py:19"): ([3], None, 1),
    }
    limit = next(h for h in hazards if h.kind == "recompile-limit")
    assert limit.function == "forward" and limit.detail.startswith("tensor 'x' size mismatch at index 1")
    assert {(f.line, f.kind) for f in confirmed} == {(26, "data-dependent-branch"), (41, "host-sync"),
                                                     (23, "shape-branch"), (13, "module-state-write"),
                                                     (14, "module-state-write")}


def test_dynamic_guard_kinds() -> None:
    from patchkit.dynamic_scan import classify
    from patchkit.verify.logs import Event

    def kind(detail: str, what: str = "recompile") -> str:
        return classify(Event(0, what, "f.py", 1, "f", detail))

    assert kind("future_covariates.stride()[0] == future_covariates.size()[1]") == "stride-guard"
    assert kind("2 <= context.storage_offset()") == "stride-guard"  # a view on one call, a fresh tensor the next
    assert kind("2 <= inputs.size()[2]") == "size-1-specialisation"
    assert kind("tensor 'k' size mismatch at index 2. expected 31, actual 32") == "static-shape"
    assert kind("expected type of 'attention_mask' to be a tensor type, ' but found <class 'NoneType'>") == "type-guard"
    assert kind("layer_idx == 0") == "int-specialisation"
    assert kind("Unsupported Tensor.item() call with capture_scalar_outputs=False", "break") == "host-sync"
    assert kind("TypeError when making fake tensor call", "break") == "graph-break"


def test_scan_dynamic_refuses_a_folder_and_bad_counts(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "--root", str(tmp_path), "scan", str(tmp_path))
    assert code == EXIT_BAD_INPUT and "not a registered model" in err and "--static" in err
    code, _, err = run_cli(capsys, "--root", str(tmp_path), "scan", "toto", "--calls", "0")
    assert code == EXIT_BAD_INPUT and "--calls" in err
    code, _, err = run_cli(capsys, "--root", str(tmp_path), "scan", "toto")
    assert code == 2 and "patchkit vendor toto" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_scan_chronos2_through_the_cli_writes_json_and_markdown(chronos_ws: Path, tmp_path: Path, capsys) -> None:
    """Three traffic calls of the pristine Chronos-2 tree under the eager backend: the isnan guard, confirmed."""
    out_json, out_md = tmp_path / "scan.json", tmp_path / "scan.md"
    code, out, err = run_cli(capsys, "--root", str(chronos_ws), "scan", "chronos2", "--calls", "3", "--json",
                             str(out_json), "--markdown", str(out_md))
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["variant"] == "pristine" and data["calls"] == 3 and data["unit_graphs"]["model"] >= 1
    guard = next(h for h in data["hazards"] if h["kind"] == "data-dependent-branch")
    assert guard["site"].startswith("chronos/chronos2/model.py:") and guard["codemod"] == "isnan-guard"
    assert guard["calls"][0] == 0 and guard["confirms"]  # logged when traced: the first call, then on recompiles
    assert sum(data["kinds"].values()) == len(data["hazards"]) and not data["within_budget"]
    assert "isnan-guard" in out and "confirmed" in out and "| data-dependent-branch |" in out_md.read_text()
