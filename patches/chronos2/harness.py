"""Chronos-2 (package ``chronos-forecasting``): the verify harness, the compile recipe and the synthetic workloads."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from patchkit.codemods.base import (
    CONTIGUOUS_HELPER,
    DYNAMIC_INT_HELPER,
    HELPERS_MODULE,
    MARK_DYNAMIC_HELPER,
    PAD_SINGLE_ROW_HELPER,
)
from patchkit.patchset import is_a
from patchkit.verify.harness import Harness
from patchkit.verify.protocol import CallOutput, CompileFn, Series
from patchkit.verify.traffic import TrafficRanges

#: amazon/chronos-2 as published (d_model 768, 12 layers, 12 heads; 119,477,664 parameters)
REAL_CONFIG: dict[str, Any] = dict(
    d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, dropout_rate=0.1, feed_forward_proj="relu",
    rope_theta=10000.0,
    chronos_config=dict(
        context_length=8192, time_encoding_scale=8192, input_patch_size=16, input_patch_stride=16,
        output_patch_size=16, max_output_patches=64,
        quantiles=[0.01, 0.05, *[round(0.1 + 0.05 * i, 2) for i in range(17)], 0.95, 0.99],
        use_reg_token=True, use_arcsinh=True,
    ),
)
REAL_PARAMETERS = 119_477_664


def compile_recipe(obj, compile_fn: CompileFn):
    """``runtime.compile_model`` for Chronos-2.  A ``Chronos2Pipeline``: its ``model`` compiled in place (the patched
    ``_predict_step`` shapes every call for one graph).  A ``Chronos2Model``: the compiled model behind
    ``ShapedModelCall``, which shapes each call as the patched ``_predict_step`` does, since a caller of the model
    itself has no such call site."""
    if is_a(obj, "Chronos2Pipeline"):
        obj.model = compile_fn(obj.model, name="model")
        return obj
    return ShapedModelCall(obj, compile_fn(obj, name="model"))


class ShapedModelCall:
    """A compiled ``Chronos2Model`` called the way the patched pipeline calls it, for services that batch their own
    requests and call the model directly.  Per call, before the compiled model runs, and with the values the model
    itself would compute:

    * a history longer than ``context_length`` is cut to it (the model's own first step), so the truncation branch
      never splits the graph;
    * a one-patch history (``input_patch_size`` steps or fewer), a size 1 that Dynamo specialises, runs the
      model eagerly instead of compiling a graph of its own;
    * no future covariates become all-NaN ones (read as zeros behind a zero mask, as without), so calls with and
      without covariates share a graph;
    * ``group_ids`` defaults to one group per series (the model's default), so a single series can run as two rows;
    * the patched tree's call-site helpers: canonical strides, batch and lengths dynamic from the first graph,
      ``num_output_patches`` as a dynamic int, a single series run as two rows, the output cloned (CUDA graphs).

    Attributes (``config``, ``device``...) are the model's.  Eager results are the model's own: every step above
    either returns the same values or runs only when the model is compiled."""

    def __init__(self, model, compiled) -> None:
        import importlib
        import inspect

        self.model, self.compiled = model, compiled
        self._signature = inspect.signature(type(model).forward)
        package = type(model).__module__.partition(".")[0]
        try:  # the patched tree's own copy of patchkit's runtime helpers
            helpers = importlib.import_module(f"{package}.{HELPERS_MODULE}")
        except ModuleNotFoundError:
            raise RuntimeError(f"{package} is not patchkit's patched Chronos-2 (no {package}.{HELPERS_MODULE}): "
                               "install the patched tree with `patchkit install chronos2`") from None
        self._helpers = tuple(getattr(helpers, name) for name in (
            MARK_DYNAMIC_HELPER, CONTIGUOUS_HELPER, DYNAMIC_INT_HELPER, PAD_SINGLE_ROW_HELPER))

    def __call__(self, *args, **kwargs):
        import torch

        mark_dynamic, contiguous, dynamic_int, pad_single_row = self._helpers
        bound = self._signature.bind(self.model, *args, **kwargs)
        a = dict(bound.arguments)
        a.pop(next(iter(self._signature.parameters)))  # self
        context, mask = a.get("context"), a.get("context_mask")
        if not isinstance(context, torch.Tensor) or context.ndim != 2:
            return self.compiled(**a)  # the model raises its own error
        limit = int(self.model.chronos_config.context_length)
        if context.shape[-1] > limit and (mask is None or mask.shape == context.shape):
            a["context"] = context = context[..., -limit:]
            if mask is not None:
                a["context_mask"] = mask[..., -limit:]
        if context.shape[-1] <= int(self.model.chronos_config.input_patch_size):
            return self.model(**a)  # a one-patch history, which Dynamo specialises: eager, no graph of its own
        if all(a.get(n) is None for n in ("future_covariates", "future_covariates_mask", "future_target")):
            # no covariates: all-NaN ones, as the pipeline passes for series it forecasts (the model reads both as
            # zeros behind a zero mask), so calls with and without covariates share one graph
            patches = int(a.get("num_output_patches", 1))
            a["future_covariates"] = torch.full(
                (context.shape[0], patches * int(self.model.chronos_config.output_patch_size)), float("nan"),
                dtype=context.dtype, device=context.device)
        if a.get("group_ids") is None:
            a["group_ids"] = torch.arange(context.shape[0], dtype=torch.long, device=self.model.device)
        for name in ("context", "context_mask", "future_covariates", "future_covariates_mask"):
            if isinstance(a.get(name), torch.Tensor) and a[name].ndim == 2:
                a[name] = mark_dynamic(contiguous(a[name]), [0, 1])
        a["group_ids"] = mark_dynamic(a["group_ids"], [0])
        if "num_output_patches" in a:
            a["num_output_patches"] = dynamic_int(self.compiled, a["num_output_patches"])
        rows = tuple(n for n in ("context", "context_mask", "future_covariates", "future_covariates_mask",
                                 "future_target", "future_target_mask") if a.get(n) is not None)
        out = pad_single_row(self.compiled, rows, distinct=("group_ids",),
                             outputs=("quantile_preds",))(**a)
        if getattr(out, "quantile_preds", None) is not None:
            out.quantile_preds = out.quantile_preds.clone()
        return out

    def __getattr__(self, key: str):
        if key in ("model", "compiled", "_signature", "_helpers"):
            raise AttributeError(key)
        return getattr(self.model, key)


class Chronos2Harness(Harness):
    model = "chronos2"
    sizes = ("tiny", "real")
    context_length = 256
    horizon = 32

    def __init__(self, tree: Path, weights: str | None = None, seed: int = 0, device: str = "cpu",
                 size: str = "tiny") -> None:
        super().__init__(tree, weights, seed, device, size)
        import torch
        from chronos.chronos2.config import Chronos2CoreConfig
        from chronos.chronos2.model import Chronos2Model

        torch.manual_seed(seed)
        dummy = self.tree / "test" / "dummy-chronos2-model"
        if weights:
            self.weights_source = str(weights)
            model = Chronos2Model.from_pretrained(weights)
        elif size == "real":
            self.weights_source = f"amazon/chronos-2 architecture, random init, seed {seed}"
            model = Chronos2Model(Chronos2CoreConfig(**REAL_CONFIG))
        elif dummy.is_dir():
            self.weights_source = "upstream test checkpoint test/dummy-chronos2-model"
            model = Chronos2Model.from_pretrained(str(dummy))
        else:
            self.weights_source = f"random init, seed {seed}"
            cfg = Chronos2CoreConfig(
                d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0,
                chronos_config=dict(
                    context_length=self.context_length, input_patch_size=16, output_patch_size=16,
                    input_patch_stride=16, quantiles=[0.1, 0.25, 0.5, 0.75, 0.9], use_reg_token=True,
                    use_arcsinh=True, max_output_patches=4,
                ),
            )
            model = Chronos2Model(cfg)
        self.net = model.to(device).eval()
        quantiles = list(self.net.chronos_config.quantiles)
        self.median = int(np.argmin([abs(q - 0.5) for q in quantiles]))
        self.patch = int(self.net.chronos_config.output_patch_size)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    # -- traffic: Chronos2Pipeline.predict with the model compiled, as users run it -------------
    def traffic_ranges(self) -> TrafficRanges:
        cfg = self.net.chronos_config
        one_pass = int(cfg.max_output_patches) * self.patch
        if self.size == "real":
            # batch 1-32, histories up to the 8192 context and past it, horizons past one pass (1024):
            # a token budget keeps a CPU run to minutes per pass
            return TrafficRanges(batch=(1, 32), history=(64, int(cfg.context_length)), horizon=(1, one_pass + 200),
                                 max_context=int(cfg.context_length), single_pass_horizon=one_pass, patch=self.patch,
                                 token_budget=8_192, options={"cross_learning": (False, False, True)})
        # tiny (the test suite): the same regimes at small lengths; the upstream test checkpoint keeps the
        # published chronos_config, so a horizon past 64 x 16 still unrolls autoregressively
        return TrafficRanges(batch=(1, 8), history=(64, 700), horizon=(1, one_pass + 40), max_context=640,
                             single_pass_horizon=one_pass, patch=self.patch, token_budget=4096,
                             options={"cross_learning": (False, False, True)})

    def serve(self, compile_fn: CompileFn):
        from chronos.chronos2.pipeline import Chronos2Pipeline

        return self._serve_pipeline(compile_recipe(Chronos2Pipeline(model=self.net), compile_fn))

    # -- ahead of time: Chronos2Model.forward as the pipeline calls it (patches/chronos2/aot.py) ---
    def export_programs(self):
        from .aot import programs

        return programs(self.net)

    def export_config(self) -> dict[str, Any]:
        from .aot import export_config

        return export_config(self.net)

    def serve_aot(self, package):
        return self._serve_pipeline(package.entry_point())

    def _serve_pipeline(self, pipeline):
        import torch

        ranges = self.traffic_ranges()
        context_length = None if self.size == "real" else ranges.max_context

        def handle(call, data_seed: int) -> CallOutput:
            rng = np.random.default_rng(data_seed)
            series = []
            for i in range(call.batch):
                length = max(8, call.history - int(rng.integers(0, 24)) * (i % 3))
                values = 100.0 + np.cumsum(rng.normal(0.0, 1.0, length))
                if i % 4 == 3:  # a NaN gap inside the history
                    start = int(rng.integers(0, max(1, length - 12)))
                    values[start : start + 6] = np.nan
                series.append(torch.tensor(values, dtype=torch.float32))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # upstream warns about horizons past its single pass
                preds = pipeline.predict(series, prediction_length=call.horizon, context_length=context_length,
                                         cross_learning=bool(call.options.get("cross_learning", False)))
            return CallOutput(np.stack([p.float().cpu().numpy() for p in preds]).astype(np.float64))

        return handle

    def to_dtype(self, dtype: str) -> None:
        import torch

        self.net.to(getattr(torch, dtype))  # inputs stay float32, as Chronos2Pipeline passes them

    def describe(self) -> dict[str, Any]:
        cfg = self.net.config
        return {
            "weights": self.weights_source,
            "config": {"d_model": cfg.d_model, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads},
            "workload": "Chronos2Model.forward compiled, called twice with NaN future covariates "
            "(the path Chronos2Pipeline always takes), batch 4, context 256, 2 output patches",
            "forecast": "median quantile of Chronos2Model.forward with NaN future covariates",
        }

    def _call(self, fn, context, horizon: int):
        import torch

        n_patches = math.ceil(horizon / self.patch)
        future = torch.full((context.shape[0], horizon), float("nan"), dtype=context.dtype, device=context.device)
        with torch.no_grad():
            out = fn(context=context, future_covariates=future, num_output_patches=n_patches)
        return out.quantile_preds

    def workload(self, compile_fn: CompileFn) -> None:
        import torch

        fn = compile_fn(self.net)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(2):
            context = torch.randn(4, self.context_length, generator=gen).cumsum(-1).to(self.device)
            self._call(fn, context, self.horizon)

    def forecast(self, series: list[Series], compile_fn: CompileFn) -> list[np.ndarray]:
        import torch

        fn = compile_fn(self.net)
        context = torch.tensor(np.stack([s.context for s in series]), dtype=torch.float32, device=self.device)
        horizon = len(series[0].truth)
        preds = self._call(fn, context, horizon)[:, self.median, :horizon]
        return [p for p in preds.float().cpu().numpy().astype(np.float64)]
