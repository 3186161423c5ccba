"""Ahead-of-time package benchmark: load time, first forecast, steady latency against compile and eager.

    .venv/bin/python benchmarks/bench_aot.py chronos2 --package dist/chronos2-real-cpu.pt2 --calls 8 \\
        [--compiled] --json reports/chronos2.real.aot.json

Rows, each from its own fresh process (the size, weights and device come from the package record):

* ``load``: a new Python process imports torch and patchkit, then ``patchkit.runtime.load_package``
  (record check + every program loaded): the call's time, and the process's time from start to loaded;
* ``first forecast``: in that same process, the first forecast through the upstream's entry point right
  after loading (chronos2: ``Chronos2Pipeline.predict``, 8 series of 500 steps, horizon 64; toto:
  ``TotoForecaster.forecast``, 1 series x 4 variates of 512 steps, horizon 128, the mean; kronos:
  ``KronosPredictor.predict``, 400 bars, 24 steps, top-p 0.9, after building the user's model and
  tokenizer), and the process's start-to-first-forecast wall time;
* ``traffic``: the model's seeded traffic profile (``--calls``) through the users' entry point for
  upstream eager (pristine tree), the package, and with ``--compiled`` the patched tree under
  ``torch.compile`` (its cold pass, compiles included, then a steady pass with new data).

Every figure is printed with the torch version, the device, the size and the parameter count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: per model: the first forecast a user makes right after loading the package (``pkg`` is loaded; the patched
#: tree is on sys.path, as an installed patched package would be)
FIRST_CALL = {
    "chronos2": """
pipeline = pkg.entry_point()
gen = torch.Generator().manual_seed(0)
series = [torch.randn(500, generator=gen).cumsum(0) for _ in range(8)]
t2 = time.perf_counter()
out = pipeline.predict(series, prediction_length=64)[0]
""",
    "toto": """
from toto.data.util.dataset import MaskedTimeseries
forecaster = pkg.entry_point()
x = torch.randn(1, 4, 512, generator=torch.Generator().manual_seed(0)).cumsum(-1)
inp = MaskedTimeseries(series=x, padding_mask=torch.ones_like(x, dtype=torch.bool),
                       id_mask=torch.zeros_like(x, dtype=torch.int), timestamp_seconds=torch.zeros_like(x, dtype=torch.int),
                       time_interval_seconds=torch.full((1, 4), 60, dtype=torch.int))
t2 = time.perf_counter()
out = forecaster.forecast(inp, prediction_length=128, num_samples=None, use_kv_cache=True).mean
""",
    "kronos": """
import numpy as np, pandas as pd
from model.kronos import Kronos, KronosTokenizer
from patchkit.patches.kronos import COLUMNS, REAL_MODEL_CONFIG, REAL_TOKENIZER_CONFIG, MODEL_CONFIG, TOKENIZER_CONFIG, ohlcv_from_close
real = pkg.record["size"] == "real"
torch.manual_seed(0)  # the exported weights: seeded like the harness (a checkpoint user loads theirs)
tb = time.perf_counter()
tok = KronosTokenizer(**(REAL_TOKENIZER_CONFIG if real else TOKENIZER_CONFIG)).eval()
model = Kronos(**(REAL_MODEL_CONFIG if real else MODEL_CONFIG)).eval()
result["user_model_build_s"] = time.perf_counter() - tb
predictor = pkg.entry_point(model, tok, device="cpu")
hist, pred = 400, 24
close = 100.0 + np.cumsum(np.random.default_rng(0).normal(0.0, 1.0, hist))
df = pd.DataFrame(ohlcv_from_close(close, 0), columns=list(COLUMNS))
stamps = pd.Series(pd.date_range("2024-01-02 09:30", periods=hist + pred, freq="5min"))
t2 = time.perf_counter()
out = torch.tensor(predictor.predict(df, stamps[:hist].reset_index(drop=True), stamps[hist:].reset_index(drop=True), pred,
                                     T=1.0, top_k=0, top_p=0.9, sample_count=1, verbose=False)[list(COLUMNS)].to_numpy())
""",
}

FIRST = r"""
import sys, time, json
t_start = float(sys.argv[2])
sys.path.insert(0, sys.argv[3])
result = {}
import torch
from patchkit.runtime import load_package
t0 = time.perf_counter()
pkg = load_package(sys.argv[1])
t1 = time.perf_counter()
w1 = time.time()
BODY
t3 = time.perf_counter()
from torch._dynamo.utils import counters
result.update({"load_s": t1 - t0, "start_to_loaded_s": w1 - t_start, "first_forecast_s": t3 - t2,
               "start_to_first_forecast_s": time.time() - t_start,
               "graphs": int(counters["stats"]["unique_graphs"]), "finite": bool(torch.isfinite(out).all())})
print(json.dumps(result))
"""


def fresh_process(model: str, package: Path, tree: Path) -> dict:
    start = time.time()
    code = FIRST.replace("BODY", FIRST_CALL[model].strip())
    proc = subprocess.run([sys.executable, "-c", code, str(package), repr(start), str(tree)], capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"fresh-process load failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    import torch

    from patchkit import api, patches
    from patchkit.aot import read_record
    from patchkit.distribute import patch_hash
    from patchkit.verify.traffic import percentiles
    from patchkit.verify.traffic_report import _run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--package", required=True, type=Path)
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compiled", action="store_true", help="also the patched tree under torch.compile")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    ws = api.workspace(ROOT)
    ps = patches.get(args.model)
    record = read_record(args.package)
    phash = patch_hash(ws.read_lock(args.model))
    size, device, weights = record["size"], record["device"], record.get("weights_path")
    head = (f"torch {torch.__version__}, {platform.machine()} {os.cpu_count()} cores, device {device}, "
            f"{args.model} size {size} ({record['parameters']:,} parameters), package "
            f"{args.package.stat().st_size / 1e6:.0f} MB, exported in "
            + ", ".join(f"{n} {t['export_s'] + t['compile_s']:.0f} s" for n, t in record["timings"].items()))
    print(head, flush=True)
    out: dict = {"header": head, "record": record}
    out["fresh"] = fresh_process(args.model, args.package, ws.patched(args.model))
    f = out["fresh"]
    print(f"load_package {f['load_s']:.2f} s (process start to loaded {f['start_to_loaded_s']:.2f} s); first "
          f"forecast {f['first_forecast_s']:.2f} s (start to first forecast {f['start_to_first_forecast_s']:.2f} s); "
          f"Dynamo graphs {f['graphs']}" + (f"; building the user's model and tokenizer took "
                                            f"{f['user_model_build_s']:.2f} s of that (kronos)"
                                            if "user_model_build_s" in f else ""), flush=True)

    common = dict(size=size, calls=args.calls, seed=args.seed, weights=weights, device=device, mode=None,
                  extra_logs=(), timeout=4 * 3600)
    rows = {}
    up, _, _ = _run(ps, ws.pristine(args.model), "upstream", "eager", backend="eager", **common)
    rows["upstream eager"] = percentiles([t for t in up["passes"]["eager"]["times_s"] if t == t])
    pk, _, _ = _run(ps, ws.patched(args.model), "package", "aot", backend="eager", **common,
                    extra_args=("--package", str(args.package.resolve()), "--patch-hash", phash))
    rows["package (aot)"] = percentiles([t for t in pk["passes"]["aot"]["times_s"] if t == t])
    if args.compiled:
        co, _, _ = _run(ps, ws.patched(args.model), "patched", "compiled,steady", backend="inductor", **common)
        rows["patched compiled, cold pass"] = percentiles([t for t in co["passes"]["compiled"]["times_s"] if t == t])
        rows["patched compiled, steady pass"] = percentiles([t for t in co["passes"]["steady"]["times_s"] if t == t])
        out["compiled_graphs"] = co.get("unit_graphs")
    out["traffic"] = rows
    print(f"traffic profile: {args.calls} calls (seed {args.seed}) through the upstream entry point")
    for name, r in rows.items():
        print(f"  {name:32s} p50 {r['p50_s'] * 1e3:9.1f} ms  p95 {r['p95_s'] * 1e3:9.1f} ms  total {r['total_s']:8.2f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
