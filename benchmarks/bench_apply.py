"""Wall time of `patchkit apply MODEL` as a user runs it (a fresh process each time).

Two cases, each repeated: a full apply into an empty vendor/MODEL (cold: the
patched tree is removed first) and a no-op re-apply (idempotent path).
Run from a workspace where MODEL is vendored:

    .venv/bin/python benchmarks/bench_apply.py chronos2 --runs 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--root", default=".")
    args = ap.parse_args()
    import torch  # only to name the version in the report

    exe = str(Path(sys.executable).with_name("patchkit"))
    cmd = [exe, "--root", args.root, "apply", args.model]
    tree = Path(args.root) / "vendor" / args.model
    cold, warm = [], []
    for _ in range(args.runs):
        shutil.rmtree(tree, ignore_errors=True)
        cold.append(timed(cmd))
        warm.append(timed(cmd))
    print(f"patchkit apply {args.model}: torch {torch.__version__}, {args.runs} runs, fresh process each")
    for label, xs in (("full apply (empty vendor tree)", cold), ("no-op re-apply", warm)):
        print(f"  {label:32s} median {statistics.median(xs):.3f} s  min {min(xs):.3f} s  max {max(xs):.3f} s")


if __name__ == "__main__":
    main()
