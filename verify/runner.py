"""Verify subprocess: ``python -m patchkit.verify.runner MODEL TREE OUT.json``.

Runs with one vendored tree first on ``sys.path`` and ``TORCH_LOGS`` set by
the parent.  Phases are fenced by marker lines on stderr so the parent can
attribute log lines.  Writes counters, fullgraph outcome and forecasts as JSON.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

PHASE_MARK = "@@patchkit-phase "


def _phase(name: str) -> None:
    print(f"{PHASE_MARK}{name}", file=sys.stderr, flush=True)


def _one_line(err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{type(err).__name__}: {first}"[:500]


def load_harness(spec: str):
    from patchkit.patchset import resolve

    return resolve(spec)


_NOT_A_BREAK = ("recompile_limit", "cache_size_limit", "fail_on_recompile")


def dynamo_counts() -> dict:
    """Graph breaks and graphs from Dynamo's counters.

    torch 2.13 files breaks under ``counters["unimplemented"]`` (older releases
    under ``counters["graph_break"]``); hitting the recompile limit is filed
    there too, but is not a break (verify reports it separately).
    """
    from torch._dynamo.utils import counters

    reasons = {}
    breaks = 0
    for bucket in ("graph_break", "unimplemented"):
        for key, n in counters[bucket].items():
            first = str(key).strip().splitlines()[0][:200] if str(key).strip() else bucket
            reasons[first] = reasons.get(first, 0) + int(n)
            if not any(tag in str(key) for tag in _NOT_A_BREAK):
                breaks += int(n)
    return {
        "graph_breaks": breaks,
        "graphs": int(counters["stats"]["unique_graphs"]),
        "frames_ok": int(counters["frames"]["ok"]),
        "reasons": reasons,
    }


def setup(model: str, tree: str | Path, *, weights: str | None, seed: int, device: str, size: str):
    """Put ``tree`` first on ``sys.path``, check that its packages are what gets imported, build the harness."""
    tree = Path(tree).resolve()
    sys.path.insert(0, str(tree))
    from patchkit import patches

    ps = patches.get(model)
    # the vendored tree must be what gets imported, not an installed copy
    for pkg in ps.provides:
        mod = importlib.import_module(pkg)
        origin = Path(getattr(mod, "__file__", "") or "").resolve()
        if tree not in origin.parents:
            raise SystemExit(f"import {pkg} resolved to {origin}, not inside {tree}")
    return tree, build_harness(ps, tree, weights=weights, seed=seed, device=device, size=size)


def build_harness(ps, tree: Path, *, weights: str | None, seed: int, device: str, size: str):
    """The patch set's harness; a checkpoint that does not load is bad input (exit 2), not a crash."""
    from patchkit.errors import BadInput, PatchkitError, classify

    cls = load_harness(ps.harness)
    try:
        return cls(tree, weights=weights, seed=seed, device=device, size=size)
    except (KeyboardInterrupt, ImportError, PatchkitError):
        raise
    except Exception as err:  # noqa: BLE001 - what a bad checkpoint raises varies by upstream
        if not weights or classify(err) is not None:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise BadInput(f"--weights {weights}: the {ps.model} checkpoint does not load "
                       f"({type(err).__name__}: {first})") from err


def reset() -> None:
    import torch
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("tree")
    ap.add_argument("out")
    ap.add_argument("--weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--forecast", choices=("none", "eager", "compiled", "both"), default="both",
                    help="which forecasts to produce (verify needs upstream eager and patched compiled)")
    ap.add_argument("--backend", default="inductor", help="backend for the break/recompile analysis phases")
    args = ap.parse_args(argv)

    tree, harness = setup(args.model, args.tree, weights=args.weights, seed=args.seed, device=args.device,
                          size=args.size)
    import torch

    from .harness import eager

    out: dict = {"model": args.model, "tree": str(tree), "torch_version": torch.__version__}
    out["describe"] = harness.describe()

    _phase("workload")
    reset()
    t0 = time.perf_counter()
    harness.workload(functools.partial(torch.compile, backend=args.backend))
    out["analysis_backend"] = args.backend
    out["workload_s"] = time.perf_counter() - t0
    out["counters"] = dynamo_counts()

    _phase("steady")  # same compiled code, new data: any recompile now is an error
    try:
        with torch.compiler.set_stance("fail_on_recompile"):
            harness.workload(functools.partial(torch.compile, backend=args.backend))
        out["steady_ok"], out["steady_error"] = True, ""
    except Exception as err:  # noqa: BLE001
        out["steady_ok"], out["steady_error"] = False, _one_line(err)

    _phase("fullgraph")
    reset()
    try:
        harness.workload(functools.partial(torch.compile, fullgraph=True, backend=args.backend))
        out["fullgraph_ok"], out["fullgraph_error"] = True, ""
    except Exception as err:  # noqa: BLE001 - any compile failure is the finding
        out["fullgraph_ok"], out["fullgraph_error"] = False, _one_line(err)

    if args.forecast != "none":
        _phase("forecast")
        series = harness.series()
        out["series"] = [
            {"name": s.name, "source": s.source, "context": s.context.tolist(), "truth": s.truth.tolist()}
            for s in series
        ]
        if args.forecast in ("eager", "both"):
            reset()
            out["forecast_eager"] = [p.tolist() for p in harness.forecast(series, eager)]
        if args.forecast in ("compiled", "both"):
            reset()
            out["forecast_compiled"] = [p.tolist() for p in harness.forecast(series, torch.compile)]
    _phase("done")
    Path(args.out).write_text(json.dumps(out))
    return 0


def entry(main) -> None:
    """Run a subprocess ``main``.  A failure prints its traceback (the parent keeps it in a log file), then one
    typed line (``patchkit.errors.failure_line``), and exits with that line's exit code."""
    from patchkit.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, BadInput, failure_line, parse_failure

    try:
        sys.exit(main())
    except SystemExit as err:
        if isinstance(err.code, str):  # a runner's own refusal: one line, bad input
            print(err.code, file=sys.stderr)
            print(failure_line(BadInput(err.code)), file=sys.stderr, flush=True)
            sys.exit(EXIT_BAD_INPUT)
        raise
    except BaseException as err:  # noqa: BLE001 - typed, then the exit code it stands for
        traceback.print_exc()
        line = failure_line(err)
        print(line, file=sys.stderr, flush=True)
        code = (parse_failure(line) or {}).get("exit_code", EXIT_INTERNAL)
        sys.exit(code)


if __name__ == "__main__":
    entry(main)
