"""Kronos ahead of time: the decode cache's two growing-window steps, and how a predictor runs them.

The ``step-cache`` step gives Kronos an exact decode cache whose steps
(``_static_s1``: the new token to its s1 logits, writing the key/value and
hidden buffers; ``_static_s2``: the drawn s1 token to the s2 logits) have static
shapes: the whole ``max_context`` buffers with a mask of filled positions and
the position as a 0-d tensor.  Those two are the package's programs, dynamic in
the batch (series x sample paths); the buffers are program inputs they update
in place.

Everything else stays eager, in the caller's model: the tokenizer, the
look-back window's prefill, the sampler (so a seed draws as upstream does), and
the full-window decode once the window rolls past ``max_context``.  So the
runtime takes the caller's own ``Kronos`` model and tokenizer, refuses a model
whose weights are not the ones exported (a fingerprint of its state dict is in
the record), and installs the programs as the cache's step compiler
(``model.patchkit_step_compiler``): ``KronosPredictor`` and its API are upstream's.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import torch

from patchkit.errors import OutsideRange
from patchkit.verify.protocol import ExportProgram

MAX_BATCH = 4096  # predict_batch folds sample_count into the batch


def fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's state dict (names, dtypes, shapes, bytes), 16 hex digits."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _cache_class(model: torch.nn.Module):
    cls = getattr(sys.modules.get(type(model).__module__), "_PatchkitDecodeCache", None)
    if cls is None:
        raise ValueError(f"{type(model).__module__}.{type(model).__name__} has no patchkit decode cache: the package "
                         "runs the patched Kronos (patchkit install kronos, or the patched tree on sys.path)")
    return cls


def _cache(model: torch.nn.Module, max_context: int, keys, values, hidden):
    cache = object.__new__(_cache_class(model))
    cache.model, cache.max_context = model, max_context
    cache.keys, cache.values, cache.hidden = list(keys), list(values), hidden
    return cache


class StepS1(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, max_context: int) -> None:
        super().__init__()
        self.model, self.max_context, self.layers = model, max_context, len(model.transformer)

    def forward(self, s1_new, s2_new, stamp_new, pos, hidden, *buffers):
        cache = _cache(self.model, self.max_context, buffers[:self.layers], buffers[self.layers:], hidden)
        return type(cache)._static_s1(cache, s1_new, s2_new, stamp_new, pos)


class StepS2(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, max_context: int) -> None:
        super().__init__()
        self.model, self.max_context = model, max_context

    def forward(self, s1_ids, pos, hidden):
        cache = _cache(self.model, self.max_context, (), (), hidden)
        return type(cache)._static_s2(cache, s1_ids, pos)


def programs(model: torch.nn.Module, max_context: int) -> list[ExportProgram]:
    from torch.export import Dim

    _cache_class(model)
    dev = next(model.parameters()).device
    batch_size, layers = 3, len(model.transformer)
    attn = model.transformer[0].self_attn
    d_model = model.norm.weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    s1 = torch.randint(0, 2 ** model.s1_bits, (batch_size, 1), generator=gen).to(dev)
    s2 = torch.randint(0, 2 ** model.s2_bits, (batch_size, 1), generator=gen).to(dev)
    stamp = torch.zeros(batch_size, 1, 5, device=dev)
    pos = torch.tensor(max_context // 2, device=dev)
    hidden = torch.randn(batch_size, max_context, d_model, generator=gen).to(dev)
    buffers = tuple(torch.randn(batch_size, attn.n_heads, max_context, attn.head_dim, generator=gen).to(dev)
                    for _ in range(2 * layers))
    batch = Dim("batch", min=1, max=MAX_BATCH)
    rows = {0: batch}
    ranges = {"batch": [1, MAX_BATCH]}
    static = {"max_context": max_context}
    return [
        ExportProgram("step_s1", StepS1(model, max_context).eval(), (s1, s2, stamp, pos, hidden, *buffers),
                      (rows, rows, rows, None, rows, tuple([rows] * len(buffers))), ranges, static),
        ExportProgram("step_s2", StepS2(model, max_context).eval(), (s1, pos, hidden), (rows, None, rows),
                      ranges, static),
    ]


def export_config(model: torch.nn.Module, max_context: int) -> dict[str, Any]:
    return {"max_context": max_context, "layers": len(model.transformer), "fingerprint": fingerprint(model)}


class PackagedSteps:
    """``model.patchkit_step_compiler`` that hands the decode cache's steps to the package's programs."""

    def __init__(self, package: Any) -> None:
        self.package = package
        self.max_context = package.record["config"]["max_context"]

    def _check(self, cache, rows: int) -> None:
        if cache.max_context != self.max_context:
            raise ValueError(f"the package's decode steps were exported for max_context={self.max_context}; this "
                             f"predictor runs max_context={cache.max_context}")
        if not 1 <= rows <= MAX_BATCH:
            raise OutsideRange(f"{rows} rows (series x sample paths) is outside the package's range 1..{MAX_BATCH}")

    def __call__(self, fn):
        s1, s2 = self.package.program("step_s1"), self.package.program("step_s2")
        if fn.__name__ == "_static_s1":
            def step_s1(cache, s1_new, s2_new, stamp_new, pos):
                self._check(cache, s1_new.shape[0])
                if stamp_new is None:
                    raise NotImplementedError("the package's decode step takes time stamps (KronosPredictor passes "
                                              "them); a call without stamps is not part of it")
                return s1(s1_new, s2_new, stamp_new, pos, cache.hidden, *cache.keys, *cache.values)
            return step_s1
        if fn.__name__ == "_static_s2":
            def step_s2(cache, s1_ids, pos):
                self._check(cache, s1_ids.shape[0])
                return s2(s1_ids, pos, cache.hidden)
            return step_s2
        raise ValueError(f"the Kronos package has no program for {fn.__name__}")


def predictor(package: Any, model: torch.nn.Module, tokenizer: torch.nn.Module, device: str | None = None,
              clip: float = 5):
    """An upstream ``KronosPredictor`` over the caller's patched model and tokenizer, whose growing-window decode
    steps run the package.  The model must hold the exported weights (checked by fingerprint)."""
    _cache_class(model)
    want = package.record["config"]["fingerprint"]
    got = fingerprint(model)
    if got != want:
        raise ValueError(f"this Kronos model's weights (fingerprint {got}) are not the exported ones ({want}); export "
                         "the package from these weights (patchkit export kronos --weights MODEL_DIR,TOKENIZER_DIR)")
    KronosPredictor = getattr(sys.modules[type(model).__module__], "KronosPredictor")
    model.patchkit_step_compiler = PackagedSteps(package)
    return KronosPredictor(model, tokenizer, device=device or package.record["device"],
                           max_context=package.record["config"]["max_context"], clip=clip)


def first_forecast(package: Any) -> tuple[Any, dict[str, float]]:
    """What a service does right after loading: build its model and tokenizer (the exported weights: the
    record's checkpoint, else the harness's seeded ones), then ``KronosPredictor.predict`` on 400 bars,
    24 steps, top-p 0.9, one path.

    Returns (a zero-argument call that makes the forecast and returns its tensor, setup timings)."""
    import importlib
    import time
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from .harness import COLUMNS, KronosHarness, ohlcv_from_close

    record = package.record
    tree = Path(importlib.import_module("model.kronos").__file__).resolve().parents[1]
    started = time.perf_counter()
    harness = KronosHarness(tree, record.get("weights_path"), 0, "cpu", record["size"])
    tokenizer, model = harness._build(lambda fn, **_: fn)
    setup = {"user_model_build_s": time.perf_counter() - started}
    pred = predictor(package, model, tokenizer)
    hist, steps = 400, 24
    close = 100.0 + np.cumsum(np.random.default_rng(0).normal(0.0, 1.0, hist))
    df = pd.DataFrame(ohlcv_from_close(close, 0), columns=list(COLUMNS))
    stamps = pd.Series(pd.date_range("2024-01-02 09:30", periods=hist + steps, freq="5min"))

    def call() -> torch.Tensor:
        out = pred.predict(df, stamps[:hist].reset_index(drop=True), stamps[hist:].reset_index(drop=True), steps,
                           T=1.0, top_k=0, top_p=0.9, sample_count=1, verbose=False)
        return torch.tensor(out[list(COLUMNS)].to_numpy())

    return call, setup
