"""The bench harness on the tiny upstream test checkpoint, with few runs (timings are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchkit import errors

from .conftest import run_cli


@pytest.mark.slow
def test_bench_rows_json_and_plot(chronos_ws: Path, tmp_path: Path, capsys):
    out_json, png, md = tmp_path / "b.json", tmp_path / "b.png", tmp_path / "b.md"
    code, out, err = run_cli(capsys, "--root", str(chronos_ws), "bench", "chronos2", "--modes",
                             "eager,default,reduce-overhead", "--runs", "2", "--batch", "2",
                             "--json", str(out_json), "--plot", str(png), "--markdown", str(md))
    assert code == 0, err
    rep = json.loads(out_json.read_text())
    assert rep["device"] == "cpu" and rep["torch_version"].startswith("2.")
    rows = {(r["variant"], r["mode"], r["warm_start"]): r for r in rep["rows"]}
    for variant in ("upstream", "patched"):
        ro = rows[(variant, "reduce-overhead", False)]
        assert ro["status"] == "n/a" and "CUDA" in ro["note"]
        for mode in ("eager", "default"):
            r = rows[(variant, mode, False)]
            assert r["status"] == "ok" and r["runs"] == 2
            for key in ("first_call_s", "median_s", "spread_s", "peak_mem_mb", "mae_diff"):
                assert r[key] is not None and r[key] >= 0
        assert rows[(variant, "default", True)]["status"] == "ok"  # warm start over the kept cache
    assert rows[("upstream", "default", False)]["graph_breaks"] >= 1
    assert rows[("patched", "default", False)]["graph_breaks"] == 0
    assert rows[("upstream", "eager", False)]["mae_diff"] == 0.0  # the baseline itself
    assert rows[("patched", "default", False)]["mae_diff"] < 1e-3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| variant | mode |" in md.read_text()
    assert "[1/" in err  # progress lines


def test_bench_rejects_unknown_mode(chronos_ws: Path, capsys):
    code, _, err = run_cli(capsys, "--root", str(chronos_ws), "bench", "chronos2", "--modes", "eager,turbo")
    assert code == errors.EXIT_BAD_INPUT and "unknown mode(s) turbo" in err
