"""Library API: every CLI command is one call here returning a result object."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

from . import patches, results
from .aot import check_record, export as _export, read_record
from .apply import ApplyResult, apply as _apply, require_applied
from .bench import bench as _bench, bench_aot as _bench_aot, bench_traffic
from .compile_cache import clear, entries, warm
from .dynamic_scan import DynamicScan, scan_model
from .distribute import build as _build, install as _install, status as _status
from .errors import BadInput, EnvironmentProblem, MissingCompiler, NotVendored, json_error
from .patchset import PatchSet
from .provenance import patch_hash
from .scan import ScanResult, scan_tree
from .upgrade import upgrade_check as _upgrade_check
from .vendoring import VendorResult, check_version, vendor as _vendor
from .verdicts import record_verdict
from .verify.aot_report import verify_aot as _verify_aot
from .verify.protocol import SIZES
from .verify.report import VerifyReport, verify_trees
from .verify.summary import load, summarise
from .verify.traffic_report import verify_traffic as _verify_traffic
from .workspace import Workspace, atomic_write_text


def workspace(root: str | Path | None = None) -> Workspace:
    return Workspace(Path(root or ".").resolve())


def list_models() -> list[PatchSet]:
    return [patches.get(name) for name in patches.names()]


def vendor(model: str, version: str | None = None, *, root: str | Path | None = None,
           archive: str | Path | None = None, refresh: bool = False) -> VendorResult:
    return _vendor(workspace(root), patches.get(model), version, archive, refresh=refresh)


def apply(model: str, *, root: str | Path | None = None, check: bool = False, diff: bool = False,
          force: bool = False) -> ApplyResult:
    return _apply(workspace(root), patches.get(model), check=check, diff=diff, force=force)


def scan_static(target: str, *, root: str | Path | None = None, patched: bool = False,
                json_path: str | Path | None = None, progress=lambda msg: None) -> ScanResult:
    """``patchkit scan TARGET --static``: the hazards a matcher sees below a folder, or in a registered model's
    vendored tree (pristine; ``patched``: the patched one)."""
    if target in patches.names() and not Path(target).is_dir():
        ws = workspace(root)
        tree = ws.patched(target) if patched else ws.pristine(target)
        if not tree.is_dir():
            what = f"`patchkit vendor {target}`" + (f" and `patchkit apply {target}`" if patched else "")
            raise NotVendored(f"{target} has no {'patched' if patched else 'pristine'} tree here; run {what} first")
    elif patched:
        raise BadInput(f"--patched is for a registered model ({', '.join(patches.names())}), not the folder {target}")
    else:
        tree = Path(target)
    result = scan_tree(tree, progress=progress)
    if json_path:
        write_report(json_path, result.to_json())
    return result


def scan_dynamic(model: str, *, root: str | Path | None = None, patched: bool = False, size: str = "tiny",
                 calls: int = 12, seed: int = 0, json_path: str | Path | None = None,
                 progress=lambda msg: None) -> DynamicScan:
    """``patchkit scan MODEL``: the model's traffic profile under Dynamo's eager backend over its vendored tree
    (pristine; ``patched``: the patched one), each hazard once, with the static findings it confirms."""
    ps = patches.get(model)
    check_size_and_weights(model, size, None)
    if calls < 1:
        raise BadInput("--calls must be at least 1")
    ws = workspace(root)
    if patched:
        _require_applied(ws, ps)
        tree = ws.patched(model)
    else:
        tree = ws.pristine(model)
        if not tree.is_dir():
            raise NotVendored(f"{model} has no pristine tree here; run `patchkit vendor {model}` first")
    result = scan_model(ps, tree, "patched" if patched else "pristine", size=size, calls=calls, seed=seed,
                        progress=progress)
    if json_path:
        write_report(json_path, result.to_json())
    return result


def _require_applied(ws: Workspace, ps: PatchSet) -> str:
    """The vendored version, once the pristine tree matches its lock and vendor/MODEL is what apply makes."""
    return require_applied(ws, ps)["version"]


def check_size_and_weights(model: str, size: str, weights: str | None) -> None:
    """Refuse an unknown size or a --weights path that is not a loadable checkpoint folder (one line, exit 2),
    before any run."""

    if size not in SIZES:
        raise BadInput(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    if weights:
        check_weights(patches.get(model), weights)


#: file names a Hugging Face style checkpoint keeps its tensors in
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.safetensors.index.json", "*.bin.index.json")


def check_weights(ps: PatchSet, weights: str) -> None:
    """Each --weights part is a directory with a ``config.json`` object and a weights file."""
    parts = [p.strip() for p in weights.split(",")]
    usage = ",".join(ps.weights_dirs)
    if len(parts) != len(ps.weights_dirs) or not all(parts):
        raise BadInput(f"--weights {weights!r}: {ps.model} takes {usage} ({len(ps.weights_dirs)} local checkpoint "
                       f"director{'y' if len(ps.weights_dirs) == 1 else 'ies'}), got {len(parts)}")
    for part in parts:
        folder = Path(part).expanduser()
        if not folder.is_dir():
            raise BadInput(f"--weights: {part!r} is not a directory (a local checkpoint directory; {ps.model} takes "
                           f"{usage})")
        config = folder / "config.json"
        if not config.is_file():
            raise BadInput(f"--weights: {part!r} holds no config.json, so it is not a checkpoint directory")
        try:
            parsed = json.loads(config.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise BadInput(f"--weights: {config} is not valid JSON ({json_error(err)})") from None
        if not isinstance(parsed, dict):
            raise BadInput(f"--weights: {config} holds a JSON {type(parsed).__name__}, not an object")
        if not any(any(folder.glob(pattern)) for pattern in _WEIGHT_FILES):
            raise BadInput(f"--weights: {part!r} holds no weights file ({', '.join(_WEIGHT_FILES[:4])})")


_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def check_device(device: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` (exit 2 otherwise); a CUDA device without one is exit 3."""
    if not _DEVICE.fullmatch(device):
        raise BadInput(f"--device {device!r}: choose cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise EnvironmentProblem(f"--device {device}: not applicable on this machine (torch sees no CUDA "
                                     "device); nothing was run, and this is not a pass")


def check_logs(logs: tuple[str, ...]) -> None:
    """Refuse a ``--logs`` name that ``TORCH_LOGS`` does not know, before any subprocess starts."""
    try:
        from torch._logging._internal import _parse_log_settings
    except ImportError:  # pragma: no cover - another torch: let TORCH_LOGS itself complain
        return
    bad = []
    for name in logs:
        try:
            _parse_log_settings(name)
        except ValueError:
            bad.append(name)
    if bad:
        raise BadInput(f"--logs: unknown TORCH_LOGS artifact(s) {', '.join(bad)} (e.g. graph_breaks, recompiles, "
                       "guards, output_code)")


def check_compiler() -> None:
    """inductor needs a C++ compiler: ``$CXX`` or ``g++`` on PATH (exit 3 without one)."""
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise MissingCompiler(f"no C++ compiler: {cxx!r} is not on PATH, and inductor compiles with it "
                              "(install g++ or set $CXX)")


def _record(ws: Workspace, model: str, kind: str, ok: bool, **facts) -> None:
    """Keep verify's verdict for this patched tree; ``build`` and ``install`` read it."""

    record_verdict(ws, model, kind, ok, **facts)


def check_tolerance(tolerance: float | None) -> None:
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise BadInput(f"--tolerance {tolerance:g}: a drift tolerance is a finite number >= 0")


def verify(model: str, *, root: str | Path | None = None, weights: str | None = None,
           logs: tuple[str, ...] = (), json_path: str | Path | None = None, device: str = "cpu",
           tolerance: float | None = None, backend: str = "inductor", size: str = "tiny",
           progress=lambda msg: None, on_report=lambda report, raw: None) -> tuple[VerifyReport, dict[str, str]]:
    """``patchkit verify``.  ``on_report`` sees the finished report before anything is written, so a failed
    write (``--json``, the verdict record) never hides the verdict."""
    ws = workspace(root)
    ps = patches.get(model)
    check_size_and_weights(model, size, weights)
    check_device(device)
    check_logs(logs)
    check_tolerance(tolerance)
    check_compiler()
    version = _require_applied(ws, ps)
    report, raw = verify_trees(ps, ws.pristine(model), ws.patched(model), version, weights=weights, device=device,
                               extra_logs=logs, tolerance=tolerance, backend=backend, size=size, progress=progress)
    on_report(report, raw)
    if tolerance is None or tolerance == ps.mae_tolerance:  # a verdict under another tolerance gates nothing
        _record(ws, model, "fixed", report.ok, size=size, device=device)
    if json_path:
        write_report(json_path, report.to_json())
    return report, raw


def write_report(path: str | Path, data: dict) -> None:
    """Write a JSON report atomically (a failed write leaves what was there)."""

    path = Path(path)
    if not path.parent.is_dir():
        raise BadInput(f"--json {str(path)!r}: folder {str(path.parent)!r} does not exist")
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def verify_traffic(model: str, *, root: str | Path | None = None, size: str = "tiny", calls: int = 24,
                   seed: int = 0, weights: str | None = None, device: str = "cpu", mode: str | None = None,
                   analysis_backend: str = "eager", logs: tuple[str, ...] = (), repeats: int = 2, load: int = 0,
                   json_path: str | Path | None = None, progress=lambda msg: None,
                   on_report=lambda report, raw: None):
    """``verify --traffic``: the model's traffic profile through its users' entry point, upstream vs patched;
    ``repeats`` steady passes over the eager data compared per element, beside ``load`` busy processes."""

    ws = workspace(root)
    ps = patches.get(model)
    check_size_and_weights(model, size, weights)
    check_device(device)
    check_logs(logs)
    check_compiler()
    version = _require_applied(ws, ps)
    report, raw = _verify_traffic(ps, ws.pristine(model), ws.patched(model), version, size=size, calls=calls,
                                  seed=seed, weights=weights, device=device, mode=mode,
                                  analysis_backend=analysis_backend, extra_logs=logs, repeats=repeats, load=load,
                                  progress=progress)
    on_report(report, raw)
    _record(ws, model, "traffic", report.ok, size=size, device=device, mode=mode or "default", calls=calls)
    if json_path:
        write_report(json_path, report.to_json())
    return report, raw


def cache_warm(model: str, *, root: str | Path | None = None, size: str = "tiny", weights: str | None = None,
               device: str = "cpu", calls: int = 24, seed: int = 0, progress=lambda msg: None):
    """``patchkit cache warm``: compile the traffic profile and save it as one portable cache artifact."""

    check_size_and_weights(model, size, weights)
    check_device(device)
    check_compiler()
    return warm(workspace(root), patches.get(model), size=size, weights=weights, device=device, calls=calls,
                seed=seed, progress=progress)


def cache_info(*, root: str | Path | None = None):
    """``patchkit cache info``: the saved artifacts, marked current when they match this torch and patch set."""

    return entries(workspace(root))


def cache_clear(model: str | None = None) -> list[str]:
    """``patchkit cache clear [MODEL]``: remove saved artifacts."""

    if model is not None:
        patches.get(model)  # an unknown model is bad input, not an empty clear
    return clear(model)


def verify_aot(model: str, package: str | Path, *, root: str | Path | None = None, calls: int = 24, seed: int = 0,
               json_path: str | Path | None = None, progress=lambda msg: None, on_report=lambda report, raw: None):
    """``verify --aot PACKAGE``: an exported package against upstream eager through the users' entry point."""

    ws = workspace(root)
    ps = patches.get(model)
    _require_applied(ws, ps)
    phash = patch_hash(ws.read_lock(model))
    record = read_record(package)
    check_record(record, package, patch_hash=phash, model=model)
    report, raw = _verify_aot(ps, ws.pristine(model), ws.patched(model), Path(package), patch_hash=phash,
                              record=record, calls=calls, seed=seed, progress=progress)
    on_report(report, raw)
    if json_path:
        write_report(json_path, report.to_json())
    return report, raw


def bench(model: str, *, root: str | Path | None = None, modes: tuple[str, ...] = ("eager", "default",
          "reduce-overhead", "max-autotune"), dtypes: tuple[str, ...] = ("float32",), batch: int = 8, runs: int = 10,
          device: str = "cpu", warm_start: bool = True, size: str = "tiny", weights: str | None = None,
          traffic: bool = False, calls: int = 24, seed: int = 0, progress=lambda msg: None):
    import dataclasses


    ws = workspace(root)
    ps = patches.get(model)
    check_size_and_weights(model, size, weights)
    check_device(device)
    if any(m != "eager" for m in modes):
        check_compiler()
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

    ws = workspace(root)
    ps = patches.get(model)
    check_size_and_weights(model, size, weights)
    check_device(device)
    check_compiler()
    result = _export(ws, ps, size=size, weights=weights, device=device, out=out, progress=progress)
    if json_path:
        write_report(json_path, result.to_json())
    return result


def build(model: str, *, root: str | Path | None = None, out: str | Path | None = None, progress=lambda msg: None):
    """``patchkit build``: the patched tree as a reproducible wheel in ``out`` (default ``dist/``)."""

    ws = workspace(root)
    return _build(ws, patches.get(model), Path(out) if out else ws.root / "dist", progress=progress)


def install(model: str, *, root: str | Path | None = None, out: str | Path | None = None, upstream: bool = False,
            force: bool = False, deps: bool = True, progress=lambda msg: None):
    """``patchkit install``: build if needed and pip-install the patched wheel; ``upstream`` puts upstream back."""

    ws = workspace(root)
    return _install(ws, patches.get(model), out_dir=Path(out) if out else ws.root / "dist", upstream=upstream,
                    force=force, deps=deps, progress=progress)


def status(models: tuple[str, ...] = (), *, root: str | Path | None = None):
    """``patchkit status``: what each model's importable package is (upstream, patched current or stale)."""

    ws = workspace(root)
    return [_status(ws, patches.get(m)) for m in (models or patches.names())]


def upgrade_check(model: str, targets: tuple[str, ...] = (), *, root: str | Path | None = None,
                  matrix: bool = False, archive: str | None = None, verify: bool = True,
                  upstream_tests: bool | None = None, backend: str | None = None, isolated: bool = False,
                  progress=lambda msg: None, on_report=lambda report: None):
    """``patchkit upgrade-check``: each target (``targets``, or with ``matrix`` and none given, every known version)
    checked in a scratch folder; ``vendor/`` is untouched.  Returns ``(pinned version, reports)``; ``on_report``
    sees each report as it is made."""

    ps = patches.get(model)
    if not targets and not matrix:
        raise BadInput("give --to VERSION, or --matrix")
    for v in targets:
        check_version(ps, v, "--to")
    lock = workspace(root).read_lock(model)
    pinned = lock["version"] if lock else ps.pin
    run_tests = upstream_tests if upstream_tests is not None else not matrix
    reports = []
    for v in (list(targets) if targets else list(ps.known_versions)):
        r = _upgrade_check(ps, v, pinned=pinned, archive=archive, verify=verify, upstream_tests=run_tests,
                           backend=backend or ("eager" if matrix else "inductor"), isolated=isolated,
                           progress=progress)
        reports.append(r)
        on_report(r)
    return pinned, reports


def report_summary(paths: list[Path]) -> tuple[str, bool]:
    """``patchkit report``: one table per report kind, and whether any report failed or is missing."""

    return summarise([load(Path(p)) for p in paths])


def report_markdown(paths: list[Path], md_path: str | Path) -> bool:
    """``patchkit report --markdown``: verify, traffic and bench reports rendered into one page, written to
    ``md_path`` once every report has been read.  Returns whether any report failed."""

    paths, md_path = [Path(p) for p in paths], Path(md_path)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BadInput(f"no such report: {', '.join(missing)}")
    try:
        text = results.render_markdown(paths, md_path)
    except (ValueError, KeyError) as err:
        raise BadInput(f"not a report patchkit wrote: {err}") from err
    md_path.write_text(text)
    return results.failed(paths)

