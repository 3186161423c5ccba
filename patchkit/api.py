"""Library API: every CLI command is one call here returning a result object."""

from __future__ import annotations

import json
from pathlib import Path

from . import patches
from .apply import ApplyResult, apply as _apply, require_applied
from .errors import BadInput
from .patchset import PatchSet
from .vendoring import VendorResult, vendor as _vendor
from .verify.report import VerifyReport, verify_trees
from .workspace import Workspace


def workspace(root: str | Path | None = None) -> Workspace:
    return Workspace(Path(root or ".").resolve())


def list_models() -> list[PatchSet]:
    return [patches.get(name) for name in patches.names()]


def vendor(model: str, version: str | None = None, *, root: str | Path | None = None,
           archive: str | Path | None = None) -> VendorResult:
    return _vendor(workspace(root), patches.get(model), version, archive)


def apply(model: str, *, root: str | Path | None = None, check: bool = False, diff: bool = False,
          force: bool = False) -> ApplyResult:
    return _apply(workspace(root), patches.get(model), check=check, diff=diff, force=force)


def _require_applied(ws: Workspace, ps: PatchSet) -> str:
    """The vendored version, once the pristine tree matches its lock and vendor/MODEL is what apply makes."""
    return require_applied(ws, ps)["version"]


def check_size_and_weights(model: str, size: str, weights: str | None) -> None:
    """Refuse an unknown size or a --weights path that does not exist (one line, exit 2), before any run."""
    from .verify.harness import SIZES

    if size not in SIZES:
        raise BadInput(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    if weights:
        for part in weights.split(","):
            if not Path(part).is_dir():
                raise BadInput(f"--weights: {part!r} is not a directory (a local checkpoint directory; kronos takes "
                               "MODEL_DIR,TOKENIZER_DIR)")


def _record(ws: Workspace, model: str, kind: str, ok: bool, **facts) -> None:
    """Keep verify's verdict for this patched tree; ``build`` and ``install`` read it."""
    from .distribute import record_verdict

    record_verdict(ws, model, kind, ok, **facts)


def verify(model: str, *, root: str | Path | None = None, weights: str | None = None,
           logs: tuple[str, ...] = (), json_path: str | Path | None = None, device: str = "cpu",
           tolerance: float | None = None, backend: str = "inductor",
           size: str = "tiny") -> tuple[VerifyReport, dict[str, str]]:
    ws = workspace(root)
    ps = patches.get(model)
    check_size_and_weights(model, size, weights)
    version = _require_applied(ws, ps)
    report, raw = verify_trees(ps, ws.pristine(model), ws.patched(model), version, weights=weights, device=device,
                               extra_logs=logs, tolerance=tolerance, backend=backend, size=size)
    _record(ws, model, "fixed", report.ok, size=size, device=device)
    if json_path:
        Path(json_path).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report, raw


def verify_traffic(model: str, *, root: str | Path | None = None, size: str = "tiny", calls: int = 24,
                   seed: int = 0, weights: str | None = None, device: str = "cpu", mode: str | None = None,
                   analysis_backend: str = "eager", logs: tuple[str, ...] = (),
                   json_path: str | Path | None = None, progress=lambda msg: None):
    """``verify --traffic``: the model's traffic profile through its users' entry point, upstream vs patched."""
    from .verify.traffic_report import verify_traffic as _verify_traffic

    ws = workspace(root)
    ps = patches.get(model)
    check_size_and_weights(model, size, weights)
    version = _require_applied(ws, ps)
    report, raw = _verify_traffic(ps, ws.pristine(model), ws.patched(model), version, size=size, calls=calls,
                                  seed=seed, weights=weights, device=device, mode=mode,
                                  analysis_backend=analysis_backend, extra_logs=logs, progress=progress)
    _record(ws, model, "traffic", report.ok, size=size, device=device, mode=mode or "default", calls=calls)
    if json_path:
        Path(json_path).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report, raw


def cache_warm(model: str, *, root: str | Path | None = None, size: str = "tiny", weights: str | None = None,
               device: str = "cpu", calls: int = 24, seed: int = 0, progress=lambda msg: None):
    """``patchkit cache warm``: compile the traffic profile and save it as one portable cache artifact."""
    from .compile_cache import warm

    check_size_and_weights(model, size, weights)
    return warm(workspace(root), patches.get(model), size=size, weights=weights, device=device, calls=calls,
                seed=seed, progress=progress)


def cache_info(*, root: str | Path | None = None):
    """``patchkit cache info``: the saved artifacts, marked current when they match this torch and patch set."""
    from .compile_cache import entries

    return entries(workspace(root))


def cache_clear(model: str | None = None) -> list[str]:
    """``patchkit cache clear [MODEL]``: remove saved artifacts."""
    from .compile_cache import clear

    if model is not None:
        patches.get(model)  # an unknown model is bad input, not an empty clear
    return clear(model)


def verify_aot(model: str, package: str | Path, *, root: str | Path | None = None, calls: int = 24, seed: int = 0,
               json_path: str | Path | None = None, progress=lambda msg: None):
    """``verify --aot PACKAGE``: an exported package against upstream eager through the users' entry point."""
    from .aot import check_record, read_record
    from .distribute import patch_hash
    from .verify.aot_report import verify_aot as _verify_aot

    ws = workspace(root)
    ps = patches.get(model)
    _require_applied(ws, ps)
    phash = patch_hash(ws.read_lock(model))
    record = read_record(package)
    check_record(record, package, patch_hash=phash, model=model)
    report, raw = _verify_aot(ps, ws.pristine(model), ws.patched(model), Path(package), patch_hash=phash,
                              record=record, calls=calls, seed=seed, progress=progress)
    if json_path:
        Path(json_path).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report, raw


def bench(model: str, *, root: str | Path | None = None, modes: tuple[str, ...] = ("eager", "default",
          "reduce-overhead", "max-autotune"), dtypes: tuple[str, ...] = ("float32",), batch: int = 8, runs: int = 10,
          device: str = "cpu", warm_start: bool = True, size: str = "tiny", weights: str | None = None,
          traffic: bool = False, calls: int = 24, seed: int = 0, progress=lambda msg: None):
    import dataclasses

    from .bench import bench as _bench, bench_traffic

    ws = workspace(root)
    ps = patches.get(model)
    check_size_and_weights(model, size, weights)
    version = _require_applied(ws, ps)
    rep = _bench(ps, ws.pristine(model), ws.patched(model), version, modes=modes, dtypes=dtypes, batch=batch,
                 runs=runs, device=device, warm_start=warm_start, size=size, weights=weights, progress=progress)
    if traffic:
        t = bench_traffic(ps, ws.pristine(model), ws.patched(model), size=size, calls=calls, seed=seed,
                          weights=weights, device=device, progress=progress)
        rep = dataclasses.replace(rep, traffic=t)
    return rep


def bench_aot(model: str, package: str | Path, *, root: str | Path | None = None, traffic: bool = False,
              calls: int = 24, seed: int = 0, progress=lambda msg: None):
    """``bench --aot PACKAGE``: load time and first forecast in a fresh process; with ``traffic``, the profile's
    latency for upstream eager, the package and patched ``torch.compile``."""
    from .aot import check_record, read_record
    from .bench import bench_aot as _bench_aot
    from .distribute import patch_hash

    ws = workspace(root)
    ps = patches.get(model)
    _require_applied(ws, ps)
    phash = patch_hash(ws.read_lock(model))
    record = read_record(package)
    check_record(record, Path(package), patch_hash=phash, model=model)
    return _bench_aot(ps, ws.pristine(model), ws.patched(model), Path(package), patch_hash=phash, record=record,
                      traffic=traffic, calls=calls, seed=seed, progress=progress)


def export(model: str, *, root: str | Path | None = None, size: str = "tiny", weights: str | None = None,
           device: str = "cpu", out: str | Path | None = None, json_path: str | Path | None = None,
           progress=lambda msg: None):
    """``patchkit export``: the patched model's programs, AOT-compiled into one ``.pt2`` package."""
    from .aot import export as _export

    ws = workspace(root)
    ps = patches.get(model)
    check_size_and_weights(model, size, weights)
    result = _export(ws, ps, size=size, weights=weights, device=device, out=out, progress=progress)
    if json_path:
        Path(json_path).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def build(model: str, *, root: str | Path | None = None, out: str | Path | None = None, progress=lambda msg: None):
    """``patchkit build``: the patched tree as a reproducible wheel in ``out`` (default ``dist/``)."""
    from .distribute import build as _build

    ws = workspace(root)
    return _build(ws, patches.get(model), Path(out) if out else ws.root / "dist", progress=progress)


def install(model: str, *, root: str | Path | None = None, out: str | Path | None = None, upstream: bool = False,
            force: bool = False, deps: bool = True, progress=lambda msg: None):
    """``patchkit install``: build if needed and pip-install the patched wheel; ``upstream`` puts upstream back."""
    from .distribute import install as _install

    ws = workspace(root)
    return _install(ws, patches.get(model), out_dir=Path(out) if out else ws.root / "dist", upstream=upstream,
                    force=force, deps=deps, progress=progress)


def status(models: tuple[str, ...] = (), *, root: str | Path | None = None):
    """``patchkit status``: what each model's importable package is (upstream, patched current or stale)."""
    from .distribute import status as _status

    ws = workspace(root)
    return [_status(ws, patches.get(m)) for m in (models or patches.names())]
