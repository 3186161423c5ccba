"""`patchkit report`: one table from verify JSON files; exit 1 when one failed or is missing."""

import json
from pathlib import Path

from patchkit import errors

from .conftest import run_cli


def _report(path: Path, model: str, ok: bool) -> Path:
    variant = {"graph_breaks": 0, "recompiles": 0, "fullgraph_ok": ok}
    path.write_text(json.dumps({
        "model": model, "upstream_version": "1.0", "torch_version": "2.13.0+cpu", "ok": ok,
        "upstream": {**variant, "graph_breaks": 4, "recompiles": 2}, "patched": variant, "mae": {"abs_diff": 1e-7},
    }))
    return path


def test_report_table_and_exit_codes(tmp_path: Path, capsys):
    good = _report(tmp_path / "a.verify.json", "alpha", True)
    code, out, _ = run_cli(capsys, "report", str(good))
    assert code == 0
    assert "alpha" in out and "4 -> 0" in out and "2 -> 0" in out and "(torch 2.13.0+cpu, device cpu)" in out
    bad = _report(tmp_path / "b.verify.json", "beta", False)
    code, out, _ = run_cli(capsys, "report", str(good), str(bad))
    assert code == errors.EXIT_VERIFY_FAILED and "FAILED" in out
    code, out, _ = run_cli(capsys, "report", str(tmp_path / "missing"), "--suffix", ".verify.json")
    assert code == errors.EXIT_VERIFY_FAILED and "NO REPORT" in out
