"""Drive an upstream object through ``patchkit.runtime.compile_model`` over a varied stream of the calls users
write, next to the same object uncompiled; print one ``RESULT {json}`` line.  Run as a script, with a vendored tree
first on ``sys.path``:  ``python tests/compile_probe.py TREE KIND BACKEND``.

KIND: ``chronos2-model`` (a ``Chronos2Model`` called directly, batch 1-32, histories past ``context_length``, 1 to
``max_output_patches`` output patches, with and without future covariates), ``chronos2-plain`` (the same stream on
plain ``torch.compile(model)``, for comparison), ``chronos2-pipeline`` (``Chronos2Pipeline.predict`` on a model
with ``max_output_patches=4``), ``toto`` (``TotoForecaster.forecast``), ``kronos`` (``KronosPredictor.predict``)."""

from __future__ import annotations

import json
import sys
import warnings


def _scale_diff(got, want) -> float:
    import numpy as np

    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def _chronos2_model():
    import torch
    from chronos.chronos2.config import Chronos2CoreConfig
    from chronos.chronos2.model import Chronos2Model

    torch.manual_seed(0)
    cfg = Chronos2CoreConfig(
        d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0,
        chronos_config=dict(context_length=256, input_patch_size=16, output_patch_size=16, input_patch_stride=16,
                            quantiles=[q / 10 for q in range(1, 10)], use_reg_token=True, use_arcsinh=True,
                            max_output_patches=4))
    return Chronos2Model(cfg).eval()


#: (batch, history, output patches, future covariates): batch 1 among larger ones, histories past the context
#: length (256), every output-patch count from 1 to max_output_patches
CHRONOS2_STREAM = ((4, 100, 2, False), (8, 64, 4, True), (1, 200, 3, False), (32, 300, 1, False), (2, 256, 1, True),
                   (1, 700, 4, True), (16, 40, 2, False), (3, 257, 3, True), (1, 16, 1, False), (5, 1000, 4, False),
                   (12, 130, 2, True), (1, 90, 2, True))


def chronos2_model(compiler: str, backend: str) -> dict:
    import torch

    from patchkit.runtime import compile_model, compiled_units

    model = _chronos2_model()
    if compiler == "recipe":
        compiled = compile_model(model, backend=backend)
    else:
        from torch._dynamo.utils import counters

        compiled = torch.compile(model, backend=backend)
    rows = []
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for b, hist, n, cov in CHRONOS2_STREAM:
            ctx = torch.randn(b, hist, generator=gen).cumsum(-1)
            kw = {"num_output_patches": n}
            if cov:  # the last series has known future values, the others are forecast
                fc = torch.full((b, n * 16), float("nan"))
                fc[-1] = torch.randn(n * 16, generator=gen)
                kw["future_covariates"] = fc
                kw["group_ids"] = torch.zeros(b, dtype=torch.long)
            want = model(context=ctx, **kw).quantile_preds
            got = compiled(context=ctx, **kw).quantile_preds
            rows.append(_scale_diff(got, want))
    if compiler == "recipe":
        graphs = compiled_units(compiled)["model"].counters.graphs
    else:
        graphs = counters["stats"]["unique_graphs"]
    return {"graphs": graphs, "drift": rows}


def chronos2_pipeline(backend: str) -> dict:
    import torch
    from chronos.chronos2.pipeline import Chronos2Pipeline

    from patchkit.runtime import compile_model, compiled_units

    eager = Chronos2Pipeline(model=_chronos2_model())
    compiled = compile_model(Chronos2Pipeline(model=_chronos2_model()), backend=backend)
    gen = torch.Generator().manual_seed(2)
    rows = []
    for b, hist, horizon in ((3, 100, 20), (1, 64, 64), (6, 300, 16), (1, 500, 40), (2, 48, 100), (5, 256, 8),
                             (1, 33, 70), (8, 120, 64)):
        ctx = torch.randn(b, 1, hist, generator=gen).cumsum(-1)
        want = eager.predict(ctx, prediction_length=horizon)
        got = compiled.predict(ctx, prediction_length=horizon)
        rows.append(max(_scale_diff(g, w) for g, w in zip(got, want)))
    return {"graphs": compiled_units(compiled)["model"].counters.graphs, "drift": rows}


def harness_profile(model: str, tree: str, backend: str, calls: int) -> dict:
    """The harness's short traffic profile at tiny size, through the object ``compile_model`` compiled (each
    harness serves an upstream object it is handed), against the same object uncompiled; graphs per unit."""
    import numpy as np
    import torch

    from patchkit import patches
    from patchkit.runtime import compile_model, compiled_units
    from patchkit.verify.traffic import profile

    from pathlib import Path

    from patchkit.patchset import resolve

    ps = patches.get(model)
    harness = resolve(ps.harness)(Path(tree))
    if model == "chronos2":
        from chronos.chronos2.pipeline import Chronos2Pipeline

        eager_obj = Chronos2Pipeline(model=harness.net)
        compiled_obj = compile_model(Chronos2Pipeline(model=harness.net), backend=backend)
        serve = harness._serve_pipeline
    elif model == "toto":
        from toto.inference.forecaster import TotoForecaster

        eager_obj = TotoForecaster(harness.backbone)
        compiled_obj = compile_model(TotoForecaster(harness.backbone), backend=backend)
        serve = harness._serve_forecaster
    else:
        from model.kronos import KronosPredictor

        from patchkit.verify.harness import eager

        tokenizer, net = harness._build(eager)
        limit = harness.traffic_ranges().max_context
        eager_obj = KronosPredictor(net, tokenizer, device="cpu", max_context=limit)
        _, net2 = harness._build(eager)  # the same seed: the same weights, compiled apart
        compiled_obj = compile_model(KronosPredictor(net2, tokenizer, device="cpu", max_context=limit),
                                     backend=backend)
        serve = harness._serve_predictor
    got_handle, want_handle = serve(compiled_obj), serve(eager_obj)
    drift = []
    for call in profile(harness.traffic_ranges(), calls, seed=0):
        outs = []
        for handle in (want_handle, got_handle):
            torch.manual_seed(call.index)
            with torch.no_grad():
                outs.append(handle(call, call.index))
        want, got = outs
        for key in ("point", "samples"):
            if getattr(want, key) is not None:
                w, g = np.asarray(getattr(want, key)), np.asarray(getattr(got, key))
                drift.append(0.0 if w.size == 0 else _scale_diff(g, w))
    units = compiled_units(compiled_obj)
    return {"graphs": {name: u.counters.graphs for name, u in units.items()},
            "fallbacks": sum(u.counters.fallbacks for u in units.values()),
            "budget": ps.traffic.graph_budget, "drift": drift}


def kronos_by_hand(tree: str) -> dict:
    """Upstream users' recipe on the patched tree: decode_s1/decode_s2 compiled by hand; two predictions."""
    import pathlib

    import torch
    from model.kronos import KronosPredictor

    from patchkit.patches.kronos.harness import KronosHarness
    from patchkit.verify.harness import eager

    harness = KronosHarness(pathlib.Path(tree))
    tokenizer, net = harness._build(eager)
    net.decode_s1 = torch.compile(net.decode_s1, backend="eager")
    net.decode_s2 = torch.compile(net.decode_s2, backend="eager")
    serve = harness._serve_predictor(KronosPredictor(net, tokenizer, device="cpu", max_context=64))
    from patchkit.verify.traffic import Call

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for i in range(2):
            serve(Call(index=i, batch=1, history=30, horizon=3, samples=1), i)
    return {"warnings": [str(w.message) for w in seen if "compile_model" in str(w.message)]}


def main(argv: list[str]) -> None:
    tree, kind, backend = argv
    sys.path.insert(0, tree)
    warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager or a recompile-limit hit fails the probe
    if kind == "chronos2-model":
        out = chronos2_model("recipe", backend)
    elif kind == "chronos2-plain":
        out = chronos2_model("plain", backend)
    elif kind == "chronos2-pipeline":
        out = chronos2_pipeline(backend)
    elif kind == "kronos-by-hand":
        out = kronos_by_hand(tree)
    elif kind in ("chronos2", "toto", "kronos"):
        out = harness_profile(kind, tree, backend, calls=8)
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
