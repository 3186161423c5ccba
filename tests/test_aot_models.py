"""Toto and Kronos packages (``patchkit export``) at tiny size: a fresh process forecasts through the upstream's
entry point (TotoForecaster with sampled paths, KronosPredictor with top-p sampling) like upstream eager, every
program of the package runs, and nothing is compiled in that process."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchkit import api


pytestmark = pytest.mark.slow


def _check(report) -> None:
    assert report.ok, report.failures
    assert report.dynamo["graphs"] == 0 and report.dynamo["frames_ok"] == 0
    assert report.program_calls and all(n > 0 for n in report.program_calls.values()), report.program_calls
    for c in report.fidelity:
        assert c.worst_rel <= 1e-5 and not c.nan_mismatch_calls and not c.shape_mismatch_calls, c


def test_toto_package_prefill_and_decode_forecast_like_upstream(toto_ws: Path, tmp_path: Path):
    result = api.export("toto", root=toto_ws, out=tmp_path / "toto.pt2")
    assert set(result.record["programs"]) == {"prefill", "decode", "prefill_v1", "decode_v1"}
    report, _ = api.verify_aot("toto", result.path, root=toto_ws, calls=24)  # 12 calls miss decode_v1
    _check(report)
    kinds = {c.what.split("(")[1].split()[0] for c in report.fidelity}
    assert kinds == {"deterministic", "sampled"}  # the mean and same-seed sampled paths


def test_kronos_package_runs_the_decode_steps_like_upstream(kronos_ws: Path, tmp_path: Path):
    result = api.export("kronos", root=kronos_ws, out=tmp_path / "kronos.pt2")
    assert result.record["programs"]["step_s1"]["static"] == {"max_context": 64}
    report, _ = api.verify_aot("kronos", result.path, root=kronos_ws, calls=8)
    _check(report)
    (check,) = report.fidelity  # predict's mean over top-p paths: a seeded draw, compared value for value
    assert check.worst_rel == 0.0

    # the predictor refuses a model whose weights are not the exported ones
    import subprocess
    import sys

    code = f"""
import sys, torch
sys.path.insert(0, {str(api.workspace(kronos_ws).patched('kronos'))!r})
from model.kronos import Kronos, KronosTokenizer
from patchkit.patches.kronos.harness import MODEL_CONFIG, TOKENIZER_CONFIG
from patchkit.runtime import load_package
pkg = load_package({result.path!r})
torch.manual_seed(0)
tok, model = KronosTokenizer(**TOKENIZER_CONFIG).eval(), Kronos(**MODEL_CONFIG).eval()
pkg.entry_point(model, tok, device="cpu")   # the exported weights (seed 0): accepted
torch.manual_seed(1)
try:
    pkg.entry_point(Kronos(**MODEL_CONFIG).eval(), tok, device="cpu")
except ValueError as err:
    print("refused:", err)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: this Kronos model's weights (fingerprint" in proc.stdout
