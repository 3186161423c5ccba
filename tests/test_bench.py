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


def _bench_row(ws: Path, model: str, dtype: str, tmp_path: Path) -> dict:
    import subprocess
    import sys

    out = tmp_path / f"{model}-{dtype}.json"
    proc = subprocess.run([sys.executable, "-m", "patchkit.bench_runner", model, str(ws / "vendor" / model), "eager",
                           dtype, str(out), "--batch", "2", "--runs", "1", "--warmup", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_toto_bfloat16_row_runs_the_upstream_api_under_autocast(toto_ws: Path, tmp_path: Path):
    """Toto has no bfloat16 path upstream: its bf16 bench row runs the same forecast under torch.autocast, so
    the matrix products run in bf16 (forecasts move, a little) and nothing raises."""
    import numpy as np

    fp32, bf16 = _bench_row(toto_ws, "toto", "float32", tmp_path), _bench_row(toto_ws, "toto", "bfloat16", tmp_path)
    assert fp32["autocast"] is None and bf16["autocast"] == "bfloat16"
    a = np.concatenate([np.ravel(p) for p in fp32["preds"]])
    b = np.concatenate([np.ravel(p) for p in bf16["preds"]])
    assert a.shape == b.shape and np.isfinite(a).all() and np.isfinite(b).all()
    assert not np.array_equal(a, b)  # autocast reached the model's matrix products
    scale = np.abs(a).max() + 1e-6
    assert np.abs(a - b).max() / scale < 0.5  # the same forecast in lower precision, not another one


def test_kronos_bfloat16_row_is_na_with_the_reason(kronos_ws: Path, tmp_path: Path):
    """KronosPredictor hands its decoder output to numpy, so under autocast it raises; the row says why."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "patchkit.bench_runner", "kronos", str(kronos_ws / "vendor" / "kronos"),
                           "eager", "bfloat16", str(tmp_path / "row.json"), "--batch", "1", "--runs", "1"],
                          capture_output=True, text=True, timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and not (tmp_path / "row.json").exists()
    assert last.startswith("NotImplementedError: kronos: KronosPredictor has no bfloat16 path"), last


def test_to_dtype_default_is_autocast_for_bfloat16_only(tmp_path: Path):
    import numpy as np
    import torch

    from patchkit.verify.harness import Harness, Series

    class Probe(Harness):
        model = "probe"

        def describe(self):
            return {}

        def workload(self, compile_fn):
            pass

        def forecast(self, series, compile_fn):
            return [torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None]

        def series(self):
            return [Series("s", np.zeros(4), np.zeros(2), "synthetic")]

    h = Probe(tmp_path)
    with pytest.raises(NotImplementedError, match="no float16 path"):
        h.to_dtype("float16")
    h.to_dtype("bfloat16")
    assert h.bench_fn(lambda f: f, 1)[1]() == [torch.bfloat16]
    h.to_dtype("float32")
    assert h.bench_fn(lambda f: f, 1)[1]() == [None]
