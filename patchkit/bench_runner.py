"""One bench row in its own process: ``python -m patchkit.bench_runner MODEL TREE MODE DTYPE OUT``.

A fresh process per row makes the first call honest (nothing compiled yet,
unless the row is a warm start over a kept inductor cache) and makes the
process's peak RSS a per-row figure.  Writes JSON; phases are fenced on stderr
for the parent's TORCH_LOGS parsing.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

MARK = "@@patchkit-phase "


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("tree")
    ap.add_argument("mode")  # eager | default | reduce-overhead | max-autotune | ...
    ap.add_argument("dtype")
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights")
    ap.add_argument("--size", default="tiny")
    args = ap.parse_args(argv)

    tree = Path(args.tree).resolve()
    sys.path.insert(0, str(tree))
    import torch
    from torch._dynamo.utils import counters

    from patchkit import patches
    from patchkit.verify.harness import eager
    from patchkit.verify.runner import build_harness, dynamo_counts

    ps = patches.get(args.model)
    harness = build_harness(ps, tree, weights=args.weights, seed=0, device=args.device, size=args.size)
    out: dict = {"torch_version": torch.__version__, "device": args.device, "size": args.size}
    try:
        out["parameters"] = harness.parameter_count()
    except NotImplementedError:
        out["parameters"] = None
    harness.to_dtype(args.dtype)
    out["autocast"] = harness.autocast_dtype  # None: the model runs in args.dtype as cast (or float32)
    if args.mode == "eager":
        compile_fn = eager
    else:
        mode = None if args.mode == "default" else args.mode
        compile_fn = lambda fn: torch.compile(fn, mode=mode)  # noqa: E731
    series, call = harness.bench_fn(compile_fn, args.batch)
    torch._dynamo.reset()
    counters.clear()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    print(f"{MARK}run", file=sys.stderr, flush=True)

    def timed() -> tuple[float, list]:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            preds = call()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, preds

    first, preds = timed()
    for _ in range(args.warmup):
        timed()
    times = [timed()[0] for _ in range(args.runs)]
    print(f"{MARK}done", file=sys.stderr, flush=True)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    out.update(
        first_call_s=first,
        median_s=statistics.median(times),
        spread_s=q[2] - q[0],  # inter-quartile range
        runs=len(times),
        counters=dynamo_counts(),
        peak_mem_mb=(torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda")
                     else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        peak_mem_kind="cuda max_memory_allocated" if args.device.startswith("cuda") else "process peak RSS",
        preds=[p.tolist() for p in preds],
        truth=[s.truth.tolist() for s in series],
        context=[s.context.tolist() for s in series],
        names=[s.name for s in series],
    )
    Path(args.out).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
