"""Kronos decode benchmark: upstream eager vs the patched decode cache, eager and compiled.

Each row runs in a fresh process on the vendored trees (``vendor/.pristine/kronos`` and
``vendor/kronos``): ``auto_regressive_inference`` with top-p sampling, seeded, on random
OHLCV-like inputs.  Prints one line per (variant, batch, sample_count) with the wall time of
the whole call (tokenizer included), and checks patched forecasts against upstream's.

    .venv/bin/python benchmarks/bench_kronos_decode.py --size real --batches 1,8 --samples 1,5 \\
        --lookback 400 --pred-len 120 --max-context 512 --json reports/kronos_decode.json

``--variants`` picks from upstream-eager, patched-eager, patched-compiled (the cache's static
steps under inductor: the first call compiles; the figure is a second call in the same process)
and upstream-compiled (decode_s1/decode_s2 compiled, as upstream users do).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = {"upstream": ROOT / "vendor" / ".pristine" / "kronos", "patched": ROOT / "vendor" / "kronos"}

CHILD = r"""
import json, sys, time
sys.path.insert(0, TREE)
import numpy as np, torch
from patchkit.patches.kronos.harness import MODEL_CONFIG, TOKENIZER_CONFIG, REAL_MODEL_CONFIG, REAL_TOKENIZER_CONFIG
from model.kronos import Kronos, KronosTokenizer, auto_regressive_inference
torch.manual_seed(0)
real = SIZE == "real"
tok = KronosTokenizer(**(REAL_TOKENIZER_CONFIG if real else TOKENIZER_CONFIG)).eval()
model = Kronos(**(REAL_MODEL_CONFIG if real else MODEL_CONFIG)).eval()
if COMPILE == "steps":
    model.patchkit_step_compiler = torch.compile
elif COMPILE == "decode":
    model.decode_s1 = torch.compile(model.decode_s1)
    model.decode_s2 = torch.compile(model.decode_s2)
g = torch.Generator().manual_seed(1)
x = torch.randn(BATCH, LOOKBACK, 6, generator=g).cumsum(1) * 0.1
stamp = torch.stack([torch.randint(0, n, (BATCH, LOOKBACK + PRED), generator=g) for n in (60, 24, 7, 32, 13)], -1).float()
times, preds = [], None
for _ in range(REPEATS):
    torch.manual_seed(123)
    t0 = time.perf_counter()
    preds = auto_regressive_inference(tok, model, x, stamp[:, :LOOKBACK], stamp[:, LOOKBACK:], MAX_CONTEXT, PRED,
                                      T=1.0, top_k=0, top_p=0.9, sample_count=SAMPLES)
    times.append(time.perf_counter() - t0)
params = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in tok.parameters())
print(json.dumps({"times": times, "preds": np.asarray(preds).tolist(), "torch": torch.__version__,
                  "params": params}))
"""

VARIANTS = {  # name: (tree, compile)
    "upstream-eager": ("upstream", "none"),
    "patched-eager": ("patched", "none"),
    "patched-compiled": ("patched", "steps"),
    "upstream-compiled": ("upstream", "decode"),
}


def run(variant: str, args, batch: int, samples: int) -> dict:
    tree, compile_ = VARIANTS[variant]
    # compiled: the second call is the steady one; eager: --eager-repeats (2 drops one-time lazy imports)
    repeats = 2 if compile_ != "none" else args.eager_repeats
    code = CHILD
    for key, value in dict(TREE=repr(str(TREES[tree])), SIZE=repr(args.size), COMPILE=repr(compile_),
                           BATCH=batch, LOOKBACK=args.lookback, PRED=args.pred_len, MAX_CONTEXT=args.max_context,
                           SAMPLES=samples, REPEATS=repeats).items():
        code = code.replace(key, str(value))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("tiny", "real"), default="real")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--samples", default="1,5")
    ap.add_argument("--lookback", type=int, default=400)
    ap.add_argument("--pred-len", type=int, default=120)
    ap.add_argument("--max-context", type=int, default=512)
    ap.add_argument("--variants", default="upstream-eager,patched-eager,patched-compiled")
    ap.add_argument("--eager-repeats", type=int, default=2, help="calls per eager row; the last is reported")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import numpy as np
    import torch

    print(f"Kronos decode, size {args.size}, torch {torch.__version__}, device cpu ({platform.machine()}), "
          f"lookback {args.lookback}, pred_len {args.pred_len}, max_context {args.max_context}, T=1.0, top_p=0.9")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for samples in (int(s) for s in args.samples.split(",")):
            base = None
            for variant in args.variants.split(","):
                r = run(variant, args, batch, samples)
                row = {"variant": variant, "batch": batch, "samples": samples, **{k: v for k, v in r.items()
                                                                                   if k != "preds"}}
                if "error" not in r:
                    row["seconds"] = r["times"][-1]
                    if variant == "upstream-eager":
                        base = r
                    elif base is not None:
                        a, b = np.asarray(base["preds"]), np.asarray(r["preds"])
                        row["rel_diff_vs_upstream"] = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))
                        row["speedup_vs_upstream_eager"] = base["times"][-1] / r["times"][-1]
                rows.append(row)
                extra = (f"  x{row['speedup_vs_upstream_eager']:.2f} vs upstream eager, rel diff "
                         f"{row['rel_diff_vs_upstream']:.1e}" if "speedup_vs_upstream_eager" in row else "")
                shown = f"{row['seconds']:.2f} s" if "seconds" in row else f"error: {row['error']}"
                first = f" (first call {r['times'][0]:.1f} s)" if len(r.get("times", [])) > 1 else ""
                print(f"  batch {batch} samples {samples} {variant:18s} {shown}{first}{extra}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size": args.size, "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
