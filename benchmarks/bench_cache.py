"""Compile-cache artifact benchmark: a new process's first compiled forecasts, cold against a saved artifact.

    .venv/bin/python benchmarks/bench_cache.py chronos2 --size real --calls 3 --json reports/chronos2.real.cache.json

1. ``patchkit cache warm`` compiles the model's first ``--calls`` traffic calls from an empty inductor cache
   and saves the artifact (the time it took is the cold compile a service pays today on every start);
2. a new process with an empty inductor cache runs the same calls compiled (cold);
3. a new process with an empty inductor cache loads the artifact first (``load_compile_cache``) and runs them;
4. a new process over the inductor cache folder the cold process filled (a service that keeps that folder
   between restarts).

Each process prints its start to first compiled forecast (importing torch, building the model, loading any
artifact, compiling), its first compiled call, the whole run, and its FX-graph / AOTAutograd
cache hits and misses; the figures name the torch version, the device, the size and the parameter count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch

    from patchkit import api, patches
    from patchkit.compile_cache import inductor_cache_env
    from patchkit.verify.traffic_report import _run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--weights")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    ws = api.workspace(ROOT)
    ps = patches.get(args.model)
    with tempfile.TemporaryDirectory(prefix="patchkit-bench-cache-") as tmp:
        os.environ["PATCHKIT_CACHE"] = str(Path(tmp) / "store")
        entry = api.cache_warm(args.model, root=ROOT, size=args.size, weights=args.weights, calls=args.calls,
                               seed=args.seed, progress=lambda m: print(f"... {m}", flush=True))
        rows = {}
        for label, folder, extra in (("cold (empty inductor cache)", "cold", ()),
                                     ("saved artifact (empty inductor cache + load_cache_artifacts)", "artifact",
                                      ("--cache-load", entry.path)),
                                     ("kept inductor cache folder (the cold process's)", "cold", ())):
            env = inductor_cache_env(Path(tmp) / f"inductor-{folder}")
            data, _, _ = _run(ps, ws.patched(args.model).resolve(), "patched", "compiled", size=args.size,
                              calls=args.calls, seed=args.seed, weights=args.weights, device="cpu",
                              backend="inductor", mode=None, extra_logs=(), timeout=4 * 3600, extra_env=env,
                              extra_args=extra)
            times = data["passes"]["compiled"]["times_s"]
            rows[label] = {"start_to_first_call_s": data["passes"]["compiled"]["start_to_first_call_s"],
                           "first_call_s": times[0], "total_s": sum(times), "calls": len(times),
                           "errors": data["passes"]["compiled"]["errors"], "compile_cache": data["compile_cache"],
                           "graphs": data.get("unit_graphs")}
            parameters = data["parameters"]
    head = (f"torch {torch.__version__}, {platform.machine()} {os.cpu_count()} cores, device cpu, {args.model} size "
            f"{args.size} ({parameters:,} parameters); cache warm: {entry.seconds:.1f} s, artifact "
            f"{entry.bytes / 1e6:.1f} MB")
    print(head)
    for label, r in rows.items():
        print(f"  {label:62s} start to first forecast {r['start_to_first_call_s']:7.2f} s  first call "
              f"{r['first_call_s']:7.2f} s  {r['calls']} calls {r['total_s']:7.2f} s  "
              f"cache {r['compile_cache']}  graphs {r['graphs']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"header": head, "warm": entry.to_json(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
