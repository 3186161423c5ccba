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


def test_report_reads_traffic_reports(tmp_path: Path, capsys):
    unit = {"name": "backbone", "graphs": 3, "budget": 4}
    variant = {"graphs": 4, "recompile_limit_hit": False, "steady_ok": True, "units": [unit]}
    path = tmp_path / "t.traffic.json"
    path.write_text(json.dumps({
        "model": "toto", "size": "real", "calls": [{}] * 24, "torch_version": "2.13.0+cpu", "ok": True,
        "upstream": {**variant, "graphs": 40, "recompile_limit_hit": True}, "patched": variant,
        "fidelity": [{"what": "patched eager vs upstream eager (deterministic outputs)", "worst_rel": 0.0, "ok": True},
                     {"what": "patched compiled vs patched eager (deterministic outputs)", "worst_rel": 2e-6,
                      "ok": True}],
    }))
    code, out, _ = run_cli(capsys, "report", str(path))
    assert code == 0
    assert "40 -> 4" in out and "backbone 3/4" in out and "YES -> no" in out and "2.0e-06" in out
