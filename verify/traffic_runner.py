"""Traffic subprocess: ``python -m patchkit.verify.traffic_runner MODEL TREE OUTDIR --passes eager,compiled,steady``.

Runs a model's traffic profile (``verify/traffic.py``) through the harness's
``serve`` entry point, in the passes asked for:

``eager``
    every call once, uncompiled: the reference outputs and eager latency;
``compiled``
    every call once through units compiled with ``--backend`` (a fresh Dynamo):
    graphs per unit, breaks, recompiles, recompile-limit hits, and latency
    with compilation included (a cold start);
``steady``
    every call again with new data under ``set_stance("fail_on_recompile")``:
    the steady-state latency, and any recompile is an error.  With
    ``--repeats N``, N more steady passes follow over the eager pass's own data
    (outputs to ``OUTDIR/repeat<k>.npz``, compared with eager per element), with
    ``--load K`` busy processes sharing the CPU while they run (``verify/load.py``).

Each call ``i`` is made with data seed ``seed * 100_000 + i`` (``+ 50_000`` in the
steady pass), and torch's global RNG is seeded with it right before the call,
so two processes (upstream and patched) see the same data and draw the same
samples.  Outputs go to ``OUTDIR/<pass>.npz``; counters, timings and errors to
``OUTDIR/traffic.json``.  Phases are fenced on stderr for the parent's
``TORCH_LOGS`` parser.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .logs import CALL_MARK
from .runner import PHASE_MARK, _one_line, dynamo_counts, entry, reset, setup

PASSES = ("eager", "compiled", "steady", "aot")
STEADY_OFFSET = 50_000


def data_seed(seed: int, index: int, steady: bool = False) -> int:
    return seed * 100_000 + index + (STEADY_OFFSET if steady else 0)


def _phase(name: str) -> None:
    print(f"{PHASE_MARK}{name}", file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_pass(handle, calls, *, seed: int, device: str, steady: bool = False, stop_on_error: bool = False):
    """Run every call; return (per-call seconds, outputs {key: array}, errors [{index, error}])."""
    import torch

    times: list[float] = []
    arrays: dict[str, np.ndarray] = {}
    errors: list[dict] = []
    for call in calls:
        ds = data_seed(seed, call.index, steady)
        torch.manual_seed(ds)
        _sync(device)
        print(f"{CALL_MARK}{call.index}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                out = handle(call, ds)
        except Exception as err:  # noqa: BLE001 - a failing call is a finding, recorded per call
            errors.append({"index": call.index, "call": call.label(), "error": _one_line(err)})
            times.append(float("nan"))
            if stop_on_error:
                break
            continue
        _sync(device)
        times.append(time.perf_counter() - t0)
        if out.point is not None:
            arrays[f"{call.index}.point"] = np.asarray(out.point)
        if out.samples is not None:
            arrays[f"{call.index}.samples"] = np.asarray(out.samples)
            arrays[f"{call.index}.sample_axis"] = np.asarray(out.sample_axis)
    return times, arrays, errors


def main(argv: list[str] | None = None) -> int:
    entered = time.perf_counter()  # before torch is imported: process start, less the interpreter's own
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("tree")
    ap.add_argument("outdir")
    ap.add_argument("--passes", default="eager,compiled,steady")
    ap.add_argument("--calls", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="inductor", help="backend of the compiled pass")
    ap.add_argument("--mode", default=None, help="inductor mode of the compiled pass (e.g. reduce-overhead)")
    ap.add_argument("--cache-save", help="compiled pass: save what it compiled (torch.compiler.save_cache_artifacts)")
    ap.add_argument("--cache-load", help="compiled pass: load a saved cache artifact before compiling")
    ap.add_argument("--repeats", type=int, default=0, help="steady passes over the eager data, compared per element")
    ap.add_argument("--load", type=int, default=0, help="busy processes sharing the CPU during the repeats")
    ap.add_argument("--package", help="aot pass: the patchkit export package to run")
    ap.add_argument("--patch-hash", help="aot pass: the patch set the package must come from")
    args = ap.parse_args(argv)
    passes = [p for p in args.passes.split(",") if p]
    unknown = set(passes) - set(PASSES)
    if unknown:
        raise SystemExit(f"unknown pass(es) {sorted(unknown)}")

    tree, harness = setup(args.model, args.tree, weights=args.weights, seed=0, device=args.device, size=args.size)
    import torch

    from .harness import Compiler, eager, require
    from .protocol import Exportable, TrafficServing
    from .traffic import profile

    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ranges = require(harness, TrafficServing).traffic_ranges()
    calls = profile(ranges, args.calls, args.seed)
    result: dict = {
        "model": args.model, "tree": str(tree), "torch_version": torch.__version__, "device": args.device,
        "size": args.size, "describe": harness.describe(), "parameters": harness.parameter_count(),
        "ranges": ranges.to_json(), "calls": [c.to_json() for c in calls], "seed": args.seed,
        "backend": args.backend, "mode": args.mode, "passes": {},
    }

    if "eager" in passes:
        _phase("traffic-eager")
        times, arrays, errs = run_pass(harness.serve(eager), calls, seed=args.seed, device=args.device)
        np.savez_compressed(outdir / "eager.npz", **arrays)
        result["passes"]["eager"] = {"times_s": times, "errors": errs}

    if "compiled" in passes or "steady" in passes:
        _phase("traffic-compiled")
        reset()
        if args.cache_load:
            info = torch.compiler.load_cache_artifacts(Path(args.cache_load).read_bytes())
            result["cache_loaded"] = {k: len(v) for k, v in (info.artifacts if info else {}).items()}
        compiler = Compiler(args.backend, mode=args.mode)
        handle = harness.serve(compiler)
        t0 = time.perf_counter()
        times, arrays, errs = run_pass(handle, calls, seed=args.seed, device=args.device)
        np.savez_compressed(outdir / "compiled.npz", **arrays)
        result["passes"]["compiled"] = {"times_s": times, "errors": errs, "wall_s": time.perf_counter() - t0,
                                        # importing torch, building the model, loading any artifact, then the
                                        # first call with its compiling (when it is the process's first pass)
                                        "start_to_first_call_s": t0 - entered + (times[0] if times else 0.0)}
        result["counters"] = dynamo_counts()
        result["unit_graphs"] = dict(compiler.graphs)
        from torch._dynamo.utils import counters

        # calls the patch set runs as the compiled module's eager code on purpose (codemod eager-when)
        result["eager_when_calls"] = int(counters["patchkit"]["eager_when"])

        result["compile_cache"] = {"fxgraph_hit": int(counters["inductor"]["fxgraph_cache_hit"]),
                                   "fxgraph_miss": int(counters["inductor"]["fxgraph_cache_miss"]),
                                   "autograd_hit": int(counters["aot_autograd"]["autograd_cache_hit"]),
                                   "autograd_miss": int(counters["aot_autograd"]["autograd_cache_miss"])}
        if args.cache_save:
            saved = torch.compiler.save_cache_artifacts()
            if saved is not None:
                Path(args.cache_save).write_bytes(saved[0])
                result["cache_artifacts"] = {k: len(v) for k, v in saved[1].artifacts.items()}
        if "steady" in passes:
            _phase("traffic-steady")
            with torch.compiler.set_stance("fail_on_recompile"):
                times, _, errs = run_pass(handle, calls, seed=args.seed, device=args.device, steady=True,
                                          stop_on_error=True)
            result["passes"]["steady"] = {"times_s": times, "errors": errs}
            if args.repeats and not errs:
                from .load import cpu_load

                repeats = []
                with cpu_load(args.load) as started, torch.compiler.set_stance("fail_on_recompile"):
                    for k in range(args.repeats):
                        times, arrays, errs = run_pass(handle, calls, seed=args.seed, device=args.device,
                                                       stop_on_error=True)
                        np.savez_compressed(outdir / f"repeat{k}.npz", **arrays)
                        repeats.append({"times_s": times, "errors": errs})
                        if errs:
                            break
                result["passes"]["repeats"] = {"passes": repeats, "load_procs": len(started)}
            result["unit_graphs_after_steady"] = dict(compiler.graphs)
    if "aot" in passes:  # the exported package through the same entry point; nothing may be compiled here
        _phase("traffic-aot")
        reset()
        from patchkit.aot import load_package

        package = load_package(args.package, patch_hash=args.patch_hash, model=args.model)
        handle = require(harness, Exportable).serve_aot(package)
        t0 = time.perf_counter()
        times, arrays, errs = run_pass(handle, calls, seed=args.seed, device=args.device)
        np.savez_compressed(outdir / "aot.npz", **arrays)
        result["passes"]["aot"] = {"times_s": times, "errors": errs, "wall_s": time.perf_counter() - t0,
                                   "load_s": package.load_s, "program_calls": dict(package.calls)}
        result["aot_counters"] = dynamo_counts()
        result["aot_record"] = package.record
    _phase("done")
    (outdir / "traffic.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    entry(main)
