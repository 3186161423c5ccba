"""Fresh-process load subprocess: ``python -m patchkit.verify.aot_load_runner MODEL TREE PACKAGE STARTED [PATCH_HASH]``.

What a restarted service pays before its first forecast: a new Python process
(``STARTED`` is the parent's ``time.time()`` right before spawning it) imports
torch and ``patchkit.runtime``, loads the package (record check and every
program), then makes the model's first forecast through the upstream's entry
point (``first_forecast`` in the patch set's ``aot_runtime`` module).  ``TREE``
(the patched tree) goes first on ``sys.path``, as an installed patched package
would be; ``PATCH_HASH``, the patch set the package must come from.  Prints one JSON line: ``load_s`` (the ``load_package`` call),
``start_to_loaded_s``, ``first_forecast_s`` (the forecast call alone),
``start_to_first_forecast_s``, ``setup`` (``entry_point_s``: importing the upstream and building its
entry point over the package, plus what the model reports), the Dynamo
graphs counted in the process (must be 0) and whether the forecast is finite.
"""

from __future__ import annotations

import importlib
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    model, tree, package_path, started = args[:4]
    patch_hash = args[4] if len(args) > 4 else None
    sys.path.insert(0, tree)
    import torch
    from torch._dynamo.utils import counters

    from patchkit import patches
    from patchkit.runtime import load_package

    t0 = time.perf_counter()
    package = load_package(package_path, patch_hash=patch_hash, model=model)
    load_s = time.perf_counter() - t0
    loaded_at = time.time()
    t_entry = time.perf_counter()
    module = importlib.import_module(patches.get(model).aot_runtime.partition(":")[0])
    call, setup = module.first_forecast(package)
    setup = {"entry_point_s": time.perf_counter() - t_entry, **setup}
    t1 = time.perf_counter()
    out = call()
    first_s = time.perf_counter() - t1
    print(json.dumps({
        "load_s": load_s, "start_to_loaded_s": loaded_at - float(started), "first_forecast_s": first_s,
        "start_to_first_forecast_s": time.time() - float(started), "setup": setup,
        "graphs": int(counters["stats"]["unique_graphs"]), "finite": bool(torch.isfinite(out).all()),
        "program_calls": dict(package.calls),
    }))
    return 0


if __name__ == "__main__":
    from .runner import entry

    entry(main)
