"""Export subprocess: ``python -m patchkit.verify.export_runner MODEL TREE OUT.pt2 RECORD.json``.

Runs with the patched tree first on ``sys.path`` (``runner.setup``), builds the
harness, exports each of its programs with ``torch.export.export`` (dynamic
dims bounded by the model's limits), compiles each with AOTInductor, and writes
one ``.pt2`` archive holding every program plus the patchkit record
(``extra/patchkit.json``).  The parent wrote the record's upstream and patch-set
half to RECORD.json; this completes it with what only the built model knows,
then rewrites RECORD.json with the timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

from .harness import require
from .protocol import Exportable
from .runner import _phase, entry, setup

#: the record's name inside the archive (``extra/`` is the PT2 archive's folder for extra files)
RECORD_NAME = "patchkit.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("tree")
    ap.add_argument("out")
    ap.add_argument("record")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--weights")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    _, harness = setup(args.model, args.tree, weights=args.weights, seed=0, device=args.device, size=args.size)
    import torch
    from torch._inductor import aot_compile
    from torch.export.pt2_archive._package import package_pt2

    record = json.loads(Path(args.record).read_text())
    programs = require(harness, Exportable).export_programs()
    files: dict[str, list] = {}
    timings: dict[str, dict[str, float]] = {}
    for prog in programs:
        t0 = time.perf_counter()
        _phase(f"program {prog.name}: torch.export")
        with torch.no_grad(), (prog.context() if prog.context else contextlib.nullcontext()):
            ep = torch.export.export(prog.module, prog.args, dynamic_shapes=prog.dynamic_shapes, strict=prog.strict)
        t1 = time.perf_counter()
        ex_args, ex_kwargs = ep.example_inputs
        _phase(f"program {prog.name}: AOTInductor compile")
        # each program carries its own copy of the weights: with the weights stored once outside the compiled code
        # ("package_constants_in_so": False), torch 2.13's loader crashed (SIGSEGV) on the real-size Chronos-2
        files[prog.name] = aot_compile(ep.module(), ex_args, ex_kwargs or {}, options={
            "aot_inductor.package": True, "aot_inductor.model_name_for_generated_files": prog.name})
        timings[prog.name] = {"export_s": round(t1 - t0, 3), "compile_s": round(time.perf_counter() - t1, 3)}
    record.update({
        "size": args.size, "device": args.device, "torch": torch.__version__,
        "parameters": harness.parameter_count(), "weights": harness.describe().get("weights"),
        "programs": {p.name: {"ranges": p.ranges, "static": p.static} for p in programs},
        "config": harness.export_config(), "timings": timings,
    })
    _phase("writing the package")
    package_pt2(args.out, aoti_files=files, extra_files={RECORD_NAME: json.dumps(record, sort_keys=True)})
    Path(args.record).write_text(json.dumps(record, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    entry(main)
