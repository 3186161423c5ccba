"""``patchkit bench``: latency per compile mode, upstream vs patched, one process per row."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .compile_cache import inductor_cache_env
from .errors import BadInput, PatchkitError, subprocess_failure
from .patchset import PatchSet
from .verify import logs as logparse
from .verify.aot_report import split_refused
from .verify.report import scaled_mae
from .verify.traffic import percentiles
from .verify.traffic_report import run_traffic

KNOWN_MODES = ("eager", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_ONLY = {"reduce-overhead": "uses CUDA graphs; needs a CUDA device"}
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class BenchRow:
    variant: str
    mode: str
    dtype: str
    device: str
    status: str  # ok | n/a | error
    note: str = ""
    warm_start: bool = False
    first_call_s: float | None = None
    median_s: float | None = None
    spread_s: float | None = None
    runs: int = 0
    graphs: int | None = None
    graph_breaks: int | None = None
    recompiles: int | None = None
    peak_mem_mb: float | None = None
    mae: float | None = None
    mae_diff: float | None = None


@dataclass(frozen=True)
class BenchReport:
    model: str
    upstream_version: str
    torch_version: str
    device: str
    date: str
    batch: int
    runs: int
    rows: list[BenchRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    size: str = "tiny"
    parameters: int | None = None
    traffic: "TrafficBench | None" = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _run_row(model: str, tree: Path, variant: str, mode: str, dtype: str, *, batch: int, runs: int, device: str,
             cache_dir: Path, warm: bool = False, timeout: int = 3600, size: str = "tiny",
             weights: str | None = None) -> tuple[BenchRow, dict | None]:
    env = {**os.environ, "TORCH_LOGS": "graph_breaks,recompiles", "PYTHONUNBUFFERED": "1",
           **inductor_cache_env(cache_dir)}
    with tempfile.TemporaryDirectory(prefix="patchkit-bench-") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, "-m", "patchkit.bench_runner", model, str(tree), mode, dtype, str(out),
               "--batch", str(batch), "--runs", str(runs), "--device", device, "--size", size]
        if weights:
            cmd += ["--weights", weights]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp)
        if proc.returncode != 0 or not out.exists():
            lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
            reason = lines[-1] if lines else f"exit {proc.returncode}"
            status = "n/a" if "NotImplementedError" in reason else "error"
            return BenchRow(variant, mode, dtype, device, status, reason[-300:], warm), None
        data = json.loads(out.read_text())
    text = proc.stderr.split("@@patchkit-phase run", 1)[-1]
    parsed = logparse.parse(text, tree)
    c = data["counters"]
    note = data["peak_mem_kind"] + (f"; {dtype} by torch.autocast" if data.get("autocast") else "")
    row = BenchRow(variant, mode, dtype, device, "ok", note, warm, data["first_call_s"],
                   data["median_s"], data["spread_s"], data["runs"], c["graphs"],
                   max(c["graph_breaks"], parsed.graph_breaks), parsed.recompiles, data["peak_mem_mb"])
    return row, data


def bench(ps: PatchSet, upstream_tree: Path, patched_tree: Path, upstream_version: str, *,
          modes: tuple[str, ...] = ("eager", "default", "reduce-overhead", "max-autotune"),
          dtypes: tuple[str, ...] = ("float32",), batch: int = 8, runs: int = 10, device: str = "cpu",
          warm_start: bool = True, tolerance: float | None = None, size: str = "tiny", weights: str | None = None,
          progress: Callable[[str], None] = lambda msg: None) -> BenchReport:
    bad = [m for m in modes if m not in KNOWN_MODES]
    if bad:
        raise BadInput(f"unknown mode(s) {', '.join(bad)}; choose from {', '.join(KNOWN_MODES)}")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise BadInput(f"unknown dtype(s) {', '.join(bad)}; choose from {', '.join(DTYPES)}")
    tol = ps.mae_tolerance if tolerance is None else tolerance
    has_cuda = device.startswith("cuda")
    plan: list[tuple[str, Path, str, str]] = []
    for variant, tree in (("upstream", upstream_tree), ("patched", patched_tree)):
        for dtype in dtypes:
            for mode in dict.fromkeys(("eager", *modes)):  # upstream eager float32 is the MAE baseline
                plan.append((variant, Path(tree).resolve(), mode, dtype))
    rows: list[BenchRow] = []
    payloads: dict[int, dict] = {}
    cache_root = Path(tempfile.mkdtemp(prefix="patchkit-inductor-cache-"))
    torch_version = ""
    started = time.perf_counter()
    try:
        total = len(plan) + (2 if warm_start else 0)
        for i, (variant, tree, mode, dtype) in enumerate(plan, 1):
            label = f"[{i}/{total}] {variant:8s} {mode:15s} {dtype}"
            if mode in CUDA_ONLY and not has_cuda:
                rows.append(BenchRow(variant, mode, dtype, device, "n/a", f"{CUDA_ONLY[mode]}; this run is on {device}"))
                progress(f"{label}: n/a ({CUDA_ONLY[mode]})")
                continue
            progress(f"{label}: running ({time.perf_counter() - started:.0f} s elapsed)")
            cache = cache_root / f"{variant}-{mode}-{dtype}"
            row, data = _run_row(ps.model, tree, variant, mode, dtype, batch=batch, runs=runs, device=device,
                                 cache_dir=cache, size=size, weights=weights)
            if data:
                payloads[len(rows)] = data
                torch_version = data["torch_version"]
            rows.append(row)
            progress(f"{label}: {_short(row)}")
        if warm_start:
            for variant in ("upstream", "patched"):
                compiled = [(r, idx) for idx, r in enumerate(rows) if r.variant == variant and r.status == "ok"
                            and r.mode != "eager" and r.dtype == dtypes[0]]
                if not compiled:
                    continue
                best, _ = min(compiled, key=lambda x: x[0].median_s)
                tree = Path(upstream_tree if variant == "upstream" else patched_tree).resolve()
                progress(f"[{len(rows) + 1}/{total}] {variant:8s} {best.mode:15s} {best.dtype}: warm start "
                         "(fresh process, inductor cache kept)")
                row, data = _run_row(ps.model, tree, variant, best.mode, best.dtype, batch=batch, runs=runs,
                                     device=device, cache_dir=cache_root / f"{variant}-{best.mode}-{best.dtype}",
                                     warm=True, size=size, weights=weights)
                if data:
                    payloads[len(rows)] = data
                rows.append(row)
                progress(f"      -> {_short(row)}")
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    # MAE against the upstream eager float32 baseline
    base_idx = next((i for i, r in enumerate(rows) if r.variant == "upstream" and r.mode == "eager"
                     and r.dtype == dtypes[0] and i in payloads), None)
    notes = []
    if base_idx is None:
        raise PatchkitError("the upstream eager baseline row failed; see the table for its error")
    b = payloads[base_idx]
    base = scaled_mae(b["preds"], b["truth"], b["context"])
    final = []
    for i, r in enumerate(rows):
        if i in payloads:
            d = payloads[i]
            mae = scaled_mae(d["preds"], d["truth"], d["context"])
            r = BenchRow(**{**asdict(r), "mae": mae, "mae_diff": abs(mae - base)})
        final.append(r)
    notes.append(f"mae: mean over {len(b['names'])} series of MAE / std(context); mae_diff against upstream eager "
                 f"{dtypes[0]} (tolerance {tol:g})")
    notes.append("spread_s: inter-quartile range of the timed runs; first_call_s includes compilation")
    parameters = next((payloads[i].get("parameters") for i in sorted(payloads)), None)
    return BenchReport(ps.model, upstream_version, torch_version, device, _dt.date.today().isoformat(), batch, runs,
                       final, notes, size=size, parameters=parameters)


def _short(r: BenchRow) -> str:
    if r.status != "ok":
        return f"{r.status}: {r.note}"
    return (f"first {r.first_call_s:.2f} s, median {r.median_s * 1000:.1f} ms, "
            f"breaks {r.graph_breaks}, recompiles {r.recompiles}")


def plot(rep: BenchReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rep.rows if r.status == "ok" and not r.warm_start]
    dtypes = list(dict.fromkeys(r.dtype for r in ok))
    fig, axes = plt.subplots(1, max(1, len(dtypes)), figsize=(6 * max(1, len(dtypes)), 4), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        modes = list(dict.fromkeys(r.mode for r in ok if r.dtype == dtype))
        for k, variant in enumerate(("upstream", "patched")):
            vals = {r.mode: r for r in ok if r.variant == variant and r.dtype == dtype}
            xs = [i + (k - 0.5) * 0.38 for i in range(len(modes))]
            ys = [vals[m].median_s * 1000 if m in vals else 0 for m in modes]
            err = [vals[m].spread_s * 500 if m in vals else 0 for m in modes]
            ax.bar(xs, ys, width=0.38, yerr=err, capsize=3, label=variant)
        ax.set_xticks(range(len(modes)), modes)
        ax.set_ylabel("median latency per forecast (ms)")
        ax.set_title(f"{rep.model} {dtype}")
        ax.legend()
    fig.suptitle(f"torch {rep.torch_version}, {rep.device}, batch {rep.batch}, {rep.date}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- traffic row: what a service pays over a varied stream of calls, compile included -------------------
@dataclass(frozen=True)
class TrafficRow:
    variant: str  # upstream | patched
    mode: str  # eager | compiled (cold cache) | compiled (warm cache)
    total_s: float  # the whole profile, compile included
    per_call_s: list[float]
    steady_per_call_s: list[float] | None = None
    steady_p50_s: float | None = None
    graphs: int | None = None
    errors: int = 0
    #: inductor FX-graph / AOTAutograd cache hits and misses of the compiled pass
    compile_cache: dict[str, int] | None = None


@dataclass(frozen=True)
class TrafficBench:
    calls: int
    seed: int
    rows: list[TrafficRow]
    #: calls after which the compiled variant has cost less in total than upstream eager (None: never)
    break_even_cold: int | None
    break_even_warm: int | None
    #: the same against patched eager
    break_even_cold_vs_patched_eager: int | None
    break_even_warm_vs_patched_eager: int | None
    note: str = ""
    #: against upstream eager, for a new process with an empty inductor cache that loaded the cold run's
    #: saved artifact (``patchkit cache warm``: torch.compiler.load_cache_artifacts)
    break_even_artifact: int | None = None


def break_even(eager: list[float], compiled: list[float], steady: list[float], limit: int = 10_000_000) -> int | None:
    """Smallest n such that n calls cost no more compiled than eager.

    Calls 1..N are the profile (``compiled`` includes compiling); after it the
    profile repeats, each call costing its ``steady`` time compiled and its
    ``eager`` time eager.  None when compiled never catches up.
    """
    n = len(eager)
    if not n or len(compiled) != n or len(steady) != n:
        return None
    gap = 0.0
    for i in range(n):
        gap += compiled[i] - eager[i]
        if gap <= 0:
            return i + 1
    gain = sum(eager) - sum(steady)  # per further cycle of the profile
    if gain <= 0:
        return None
    cycles = max(0, int(gap // gain) - 1)
    gap -= cycles * gain
    calls = n + cycles * n
    while calls < limit:
        for i in range(n):
            gap -= eager[i] - steady[i]
            calls += 1
            if gap <= 0:
                return calls
    return None


def bench_traffic(ps: PatchSet, upstream_tree: Path, patched_tree: Path, *, size: str = "tiny", calls: int = 24,
                  seed: int = 0, weights: str | None = None, device: str = "cpu",
                  progress: Callable[[str], None] = lambda msg: None) -> TrafficBench:
    """The traffic profile's total wall time per variant, each run in a fresh process.

    upstream eager; patched eager; patched compiled on an empty inductor cache
    (cold) and again in a new process over the cache the cold run filled (warm).
    Each compiled run is followed by a steady pass (new data, no compiling).
    """

    cache = Path(tempfile.mkdtemp(prefix="patchkit-traffic-cache-"))
    artifact = cache / "artifact.bin"

    # (variant, tree, mode, passes, inductor cache folder, extra runner args)
    plan = [("upstream", Path(upstream_tree), "eager", "eager", "none", ()),
            ("patched", Path(patched_tree), "eager", "eager", "none", ()),
            ("patched", Path(patched_tree), "compiled (cold cache)", "compiled,steady", "main",
             ("--cache-save", str(artifact))),
            ("patched", Path(patched_tree), "compiled (warm cache)", "compiled,steady", "main", ()),
            ("patched", Path(patched_tree), "compiled (empty cache + saved artifact)", "compiled,steady", "empty",
             ("--cache-load", str(artifact)))]
    rows: list[TrafficRow] = []
    try:
        for i, (variant, tree, mode, passes, folder, extra) in enumerate(plan, 1):
            progress(f"[traffic {i}/{len(plan)}] {variant} {mode}: {calls} calls")
            data = run_traffic(ps, tree.resolve(), variant, passes, size=size, calls=calls, seed=seed,
                               weights=weights, device=device, extra_env=inductor_cache_env(cache / folder),
                               extra_args=extra).data
            first = data["passes"]["eager" if passes == "eager" else "compiled"]
            steady = data["passes"].get("steady")
            rows.append(TrafficRow(
                variant, mode, float(sum(first["times_s"])), first["times_s"],
                steady_per_call_s=steady["times_s"] if steady else None,
                steady_p50_s=float(statistics.median(steady["times_s"])) if steady else None,
                graphs=sum(data.get("unit_graphs", {}).values()) if steady else None,
                errors=len(first["errors"]) + (len(steady["errors"]) if steady else 0),
                compile_cache=data.get("compile_cache"),
            ))
            progress(f"      -> {rows[-1].total_s:.1f} s")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    up_eager, pa_eager, cold, warm, loaded = rows

    def be(ref: TrafficRow, row: TrafficRow) -> int | None:
        if row.errors or ref.errors:
            return None
        return break_even(ref.per_call_s, row.per_call_s, row.steady_per_call_s or [])

    return TrafficBench(calls, seed, rows, be(up_eager, cold), be(up_eager, warm), be(pa_eager, cold),
                        be(pa_eager, warm), break_even_artifact=be(up_eager, loaded),
                        note="break-even: calls after which compiled has cost less in total than eager, the profile "
                             "repeating at steady compiled cost after its first pass")


# -- ahead-of-time package: what a restarted service pays, and the steady latency it then gets ----------
@dataclass(frozen=True)
class AotRow:
    name: str  # upstream eager | package (aot) | patched compiled, cold pass | patched compiled, steady pass
    total_s: float
    p50_s: float
    p95_s: float
    calls: int
    errors: int = 0
    graphs: int | None = None
    #: package calls refused as outside its exported ranges (patchkit.aot.OutsideRange); not timed
    refused: int = 0


@dataclass(frozen=True)
class AotBench:
    model: str
    size: str
    parameters: int | None
    device: str
    torch_version: str
    date: str
    package: str
    package_mb: float
    #: seconds per program: torch.export + AOTInductor compile, from the package record
    export_s: dict[str, float]
    #: the fresh process (``verify/aot_load_runner.py``): load_s, start_to_loaded_s, first_forecast_s,
    #: start_to_first_forecast_s, setup, graphs, finite, program_calls
    fresh: dict[str, Any]
    calls: int = 0
    seed: int = 0
    rows: list[AotRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def bench_aot(ps: PatchSet, upstream_tree: Path, patched_tree: Path, package: Path, *, patch_hash: str,
              record: dict[str, Any], traffic: bool = False, calls: int = 24, seed: int = 0,
              progress: Callable[[str], None] = lambda msg: None) -> AotBench:
    """An exported package: load and first forecast in a fresh process, then (``traffic``) the traffic profile
    through the upstream's entry point for upstream eager, the package, and the patched tree under
    ``torch.compile`` (cold pass, compiles included, then a steady pass on new data), each in its own process.

    The size, weights and device are the package's (``record``, already checked by the caller)."""

    package = Path(package).resolve()
    size, device, weights = record["size"], record["device"], record.get("weights_path")
    progress(f"[aot] fresh process: load {package.name}, first forecast")
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "patchkit.verify.aot_load_runner", ps.model, str(patched_tree),
                           str(package), repr(started), patch_hash], capture_output=True, text=True)
    if proc.returncode != 0:
        raise subprocess_failure(f"{ps.model}: the package did not load and forecast in a fresh process",
                                 proc.returncode, proc.stderr, f"bench-aot-{ps.model}")
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    rows: list[AotRow] = []
    if traffic:
        common = dict(size=size, calls=calls, seed=seed, weights=weights, device=device, timeout=4 * 3600)

        def row(name: str, p: dict, graphs: int | None = None) -> AotRow:
            pc = percentiles([t for t in p["times_s"] if t == t])
            refused, errors = split_refused(p["errors"])
            return AotRow(name, pc["total_s"], pc["p50_s"], pc["p95_s"], pc["calls"], len(errors), graphs,
                          len(refused))

        progress(f"[aot traffic 1/3] upstream eager: {calls} calls")
        up = run_traffic(ps, Path(upstream_tree), "upstream", "eager", backend="eager", **common).data
        rows.append(row("upstream eager", up["passes"]["eager"]))
        progress(f"[aot traffic 2/3] package (aot): {calls} calls")
        pk = run_traffic(ps, Path(patched_tree), "package", "aot", backend="eager", **common,
                         extra_args=("--package", str(package), "--patch-hash", patch_hash)).data
        rows.append(row("package (aot)", pk["passes"]["aot"], pk.get("aot_counters", {}).get("graphs")))
        progress(f"[aot traffic 3/3] patched torch.compile: {calls} calls, then a steady pass")
        with tempfile.TemporaryDirectory(prefix="patchkit-aot-bench-") as cold:  # an empty inductor cache
            co = run_traffic(ps, Path(patched_tree), "patched", "compiled,steady", backend="inductor", **common,
                             extra_env=inductor_cache_env(Path(cold))).data
        graphs = sum(co.get("unit_graphs", {}).values())
        rows.append(row("patched compiled, cold pass", co["passes"]["compiled"], graphs))
        rows.append(row("patched compiled, steady pass", co["passes"]["steady"], graphs))
    return AotBench(ps.model, size, record.get("parameters"), device, record["torch"],
                    _dt.date.today().isoformat(), str(package), package.stat().st_size / 1e6,
                    {n: t["export_s"] + t["compile_s"] for n, t in record.get("timings", {}).items()}, fresh,
                    calls if traffic else 0, seed, rows)
