"""Ahead-of-time packages (``patchkit export``, ``patchkit.runtime.load_package``, ``verify --aot``) at tiny size.

One export of the patched Chronos-2 (upstream's test checkpoint, two AOTInductor programs, ~100 s on two
cores) serves the module.  A fresh process loads it and forecasts through an unchanged Chronos2Pipeline; its
outputs are compared call by call with upstream eager, and its Dynamo counters must stay at zero.  Bad
packages and bad shapes get one line and exit 2 (or a ValueError naming the range), with nothing written.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from patchkit import aot, api
from patchkit.provenance import patch_hash

from .conftest import run_cli, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(chronos_patched, tmp_path_factory) -> tuple[Path, Path]:
    """(workspace, package): the patched Chronos-2 exported once."""
    root = tmp_path_factory.mktemp("aot-ws")
    ws = root / "ws"
    shutil.copytree(chronos_patched, ws)
    result = api.export("chronos2", root=ws, out=root / "chronos2.pt2")
    return ws, Path(result.path)


def _with_record(src: Path, dest: Path, **changes) -> Path:
    """A copy of the package whose patchkit record has ``changes``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith(f"/extra/{aot.RECORD_NAME}"):
                data = json.dumps({**json.loads(data), **changes}).encode()
            zout.writestr(item, data)
    return dest


def test_export_writes_a_package_with_its_record(exported):
    ws, package = exported
    record = aot.read_record(package)
    lock = api.workspace(ws).read_lock("chronos2")
    assert record["model"] == "chronos2" and record["patch_hash"] == patch_hash(lock)
    assert record["upstream"]["version"] == lock["version"] == "2.3.2"
    assert record["upstream"]["sha256"] == lock["source"]["sha256"]
    import torch

    assert record["torch"] == torch.__version__ and record["device"] == "cpu" and record["size"] == "tiny"
    assert record["programs"]["main"]["ranges"] == {"batch": [1, 1024], "context_patches": [2, 512],
                                                    "output_patches": [2, 64]}
    assert record["programs"]["one_patch"]["static"] == {"output_patches": 1}
    assert not list(package.parent.glob("*.partial"))  # the temporary file was renamed into place


def test_fresh_process_forecasts_like_upstream_eager_without_compiling(exported, capsys):
    ws, package = exported
    code, out, err = run_cli(capsys, "--root", str(ws), "verify", "chronos2", "--aot", str(package),
                             "--calls", "10", "--json", str(ws / "aot.json"))
    report = json.loads((ws / "aot.json").read_text())
    assert code == 0, report["failures"]
    (check,) = report["fidelity"]
    assert check["calls"] == 10 and check["worst_rel"] <= 1e-5 and not check["nan_mismatch_calls"]
    assert report["dynamo"]["graphs"] == 0 and report["dynamo"]["frames_ok"] == 0
    # the profile reaches both programs: one-patch horizons and multi-patch (and unrolled) ones
    horizons = [c["horizon"] for c in report["calls"]]
    assert min(horizons) <= 16 < max(horizons)
    assert "Dynamo graphs in the package's process: 0" in out


def test_runtime_pipeline_names_the_range_and_refuses_unexported_arguments(exported):
    import torch

    from patchkit.runtime import load_package

    _, package = exported
    pipeline = load_package(package).entry_point()
    preds = pipeline.predict([torch.randn(40).cumsum(0)], prediction_length=5)
    assert preds[0].shape[-1] == 5 and torch.isfinite(preds[0]).all()
    with pytest.raises(ValueError, match=r"at least 17 steps \(2\.\.512 input patches of 16\)"):
        pipeline.model(context=torch.randn(2, 10), group_ids=torch.arange(2),
                       future_covariates=torch.full((2, 16), float("nan")), num_output_patches=1)
    with pytest.raises(ValueError, match=r"batch of 1025 series is outside the package's range 1\.\.1024"):
        pipeline.model(context=torch.randn(1025, 32), future_covariates=torch.full((1025, 16), float("nan")))
    with pytest.raises(NotImplementedError, match="context_mask is not part of it"):
        pipeline.model(context=torch.randn(2, 32), context_mask=torch.ones(2, 32),
                       future_covariates=torch.full((2, 16), float("nan")))


def test_package_from_another_torch_or_patch_set_is_refused(exported, tmp_path, capsys):
    ws, package = exported
    other = _with_record(package, tmp_path / "other-torch.pt2", torch="2.0.0")
    code, out, err = run_cli(capsys, "--root", str(ws), "verify", "chronos2", "--aot", str(other))
    assert code == 2 and "exported with torch 2.0.0" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(aot.PackageMismatch, match="exported with torch 2.0.0"):
        aot.load_package(other)
    stale = _with_record(package, tmp_path / "stale.pt2", patch_hash="000000000000")
    code, _, err = run_cli(capsys, "--root", str(ws), "verify", "chronos2", "--aot", str(stale))
    assert code == 2 and "exported from patch set 000000000000" in err
    with pytest.raises(aot.PackageMismatch, match="patch set 000000000000"):
        aot.load_package(stale, patch_hash=aot.read_record(package)["patch_hash"])


def test_corrupt_package_is_refused_in_one_line(exported, tmp_path, capsys):
    ws, package = exported
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(package.read_bytes()[: 4096])
    norecord = tmp_path / "norecord.pt2"
    with zipfile.ZipFile(norecord, "w") as zf:
        zf.writestr("x/data/nothing", b"")
    for bad, says in ((truncated, "not a readable .pt2 package"), (norecord, "not a patchkit package")):
        code, _, err = run_cli(capsys, "--root", str(ws), "verify", "chronos2", "--aot", str(bad))
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
        with pytest.raises(aot.CorruptPackage):
            aot.load_package(bad)


def test_export_refuses_bad_input_and_writes_nothing(chronos_vendored, tmp_path, capsys):
    before = snapshot(chronos_vendored)
    out = tmp_path / "never.pt2"
    # vendored but not applied: vendor/chronos2 is missing
    code, _, err = run_cli(capsys, "--root", str(chronos_vendored), "export", "chronos2", "--out", str(out))
    assert code == 2 and "run `patchkit apply chronos2` first" in err
    code, _, err = run_cli(capsys, "--root", str(chronos_vendored), "export", "chronos2", "--out",
                           str(tmp_path / "x.zip"))
    assert code == 2 and "must end in .pt2" in err
    code, _, err = run_cli(capsys, "--root", str(chronos_vendored), "export", "toto")
    assert code == 2
    assert not out.exists() and not list(tmp_path.iterdir()) and snapshot(chronos_vendored) == before


def test_export_on_cuda_without_a_gpu_is_not_applicable(chronos_vendored, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, _, err = run_cli(capsys, "--root", str(chronos_vendored), "export", "chronos2", "--device", "cuda",
                           "--out", str(tmp_path / "x.pt2"))
    assert code == 3 and "not applicable" in err and not (tmp_path / "x.pt2").exists()


def test_cache_warm_info_load_clear(exported, tmp_path, monkeypatch, capsys):
    """A saved compile-cache artifact: keyed by torch and patch set, listed, loadable, refused when stale."""
    from patchkit import compile_cache
    from patchkit.runtime import load_compile_cache

    ws, package = exported
    monkeypatch.setenv("PATCHKIT_CACHE", str(tmp_path / "cache"))
    code, out, err = run_cli(capsys, "--root", str(ws), "cache", "warm", "chronos2", "--calls", "1")
    assert code == 0 and out.startswith("saved "), err
    phash = aot.read_record(package)["patch_hash"]
    code, out, _ = run_cli(capsys, "--root", str(ws), "cache", "info", "--json")
    (entry,) = json.loads(out)
    assert entry["model"] == "chronos2" and entry["patch_hash"] == phash and entry["current"] is True
    assert entry["artifacts"].get("inductor", 0) >= 1 and Path(entry["path"]).stat().st_size == entry["bytes"]
    assert load_compile_cache(entry["path"], patch_hash=phash)["calls"] == 1
    with pytest.raises(compile_cache.CacheMismatch, match="saved from patch set"):
        load_compile_cache(entry["path"], patch_hash="000000000000")
    record = Path(entry["path"]).with_suffix(".json")
    record.write_text(json.dumps({**json.loads(record.read_text()), "torch": "2.0.0"}))
    with pytest.raises(compile_cache.CacheMismatch, match="saved by torch 2.0.0"):
        load_compile_cache(entry["path"])
    code, _, err = run_cli(capsys, "cache", "clear", "nosuchmodel")
    assert code == 2 and Path(entry["path"]).exists()
    code, out, _ = run_cli(capsys, "cache", "clear", "chronos2")
    assert code == 0 and "removed 1 artifact" in out and not Path(entry["path"]).exists()


def test_bench_aot_rows_from_a_fresh_process(exported, tmp_path, capsys):
    """``bench --aot``: load and first forecast in a new process, then the traffic rows; nothing compiled there."""
    ws, package = exported
    out_json = tmp_path / "bench-aot.json"
    code, out, err = run_cli(capsys, "--root", str(ws), "bench", "chronos2", "--aot", str(package), "--traffic",
                             "--calls", "1", "--json", str(out_json))
    assert code == 0, err
    rep = json.loads(out_json.read_text())
    fresh = rep["fresh"]
    assert fresh["graphs"] == 0 and fresh["finite"] is True and fresh["program_calls"]["main"] >= 1
    assert 0 < fresh["load_s"] < fresh["start_to_loaded_s"] < fresh["start_to_first_forecast_s"]
    assert rep["size"] == "tiny" and rep["parameters"] == 7_954 and rep["torch_version"] in out
    rows = {r["name"]: r for r in rep["rows"]}
    assert list(rows) == ["upstream eager", "package (aot)", "patched compiled, cold pass",
                          "patched compiled, steady pass"]
    assert all(r["calls"] == 1 and r["errors"] == 0 and r["total_s"] > 0 for r in rows.values())
    assert rows["package (aot)"]["graphs"] == 0 and rows["patched compiled, cold pass"]["graphs"] >= 1
    assert "aot-load" in out and "first forecast" in out
    stale = _with_record(package, tmp_path / "stale.pt2", patch_hash="000000000000")
    code, _, err = run_cli(capsys, "--root", str(ws), "bench", "chronos2", "--aot", str(stale))
    assert code == 2 and "exported from patch set 000000000000" in err and len(err.strip().splitlines()) == 1
