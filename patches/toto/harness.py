"""Toto (package ``toto-ts``): the verify harness, the compile recipe and the synthetic workloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from patchkit.patchset import is_a
from patchkit.verify.harness import Harness
from patchkit.verify.protocol import CallOutput, CompileFn, Series
from patchkit.verify.traffic import TrafficRanges

#: Toto-Open-Base-1.0 as published (151,306,080 parameters); SDPA attention (xFormers is GPU-only)
REAL_CONFIG: dict[str, Any] = dict(
    patch_size=64, stride=64, embed_dim=768, num_layers=12, num_heads=12, mlp_hidden_dim=3072, dropout=0.1,
    spacewise_every_n_layers=12, spacewise_first=False,
    scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
    output_distribution_classes=["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
    output_distribution_kwargs={"k_components": 24}, use_memory_efficient_attention=False,
    stabilize_with_global=True, scale_factor_exponent=10.0,
)
REAL_PARAMETERS = 151_306_080


def compile_recipe(obj, compile_fn: CompileFn):
    """``runtime.compile_model`` for Toto: the backbone is the compiled unit.  A ``TotoForecaster``: its ``model``
    compiled in place (the patched forecaster shapes every call for one graph per phase and variates class).  A
    ``TotoBackbone``: the compiled backbone, to hand to ``TotoForecaster``."""
    if is_a(obj, "TotoForecaster"):
        obj.model = compile_fn(obj.model, name="backbone")
        return obj
    return compile_fn(obj, name="backbone")


class TotoHarness(Harness):
    """Tiny random-weight Toto (or a checkpoint via ``weights``) driven through TotoForecaster."""

    model = "toto"
    sizes = ("tiny", "real")
    context_length = 256
    horizon = 32
    #: workload geometry: context 64 steps (8 patches of 8), then two horizons:
    #: 17 and 9 model calls (1 prefill + 16 and 8 decode steps)
    workload_context = 64
    workload_horizons = (136, 72)

    def __init__(self, tree: Path, weights: str | None = None, seed: int = 0, device: str = "cpu",
                 size: str = "tiny") -> None:
        super().__init__(tree, weights, seed, device, size)
        import torch
        from toto.model.toto import Toto

        torch.manual_seed(seed)
        if weights:
            self.weights_source = str(weights)
            toto = Toto.from_pretrained(weights)
        elif size == "real":
            self.weights_source = f"Toto-Open-Base-1.0 architecture, random init, seed {seed}"
            toto = Toto(**REAL_CONFIG)
        else:
            self.weights_source = f"random init, seed {seed}"
            toto = Toto(
                patch_size=8,
                stride=8,
                embed_dim=32,
                num_layers=4,
                num_heads=2,
                mlp_hidden_dim=64,
                dropout=0.0,
                spacewise_every_n_layers=2,
                spacewise_first=False,
                scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
                output_distribution_classes=["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
                output_distribution_kwargs={"k_components": 4},
                use_memory_efficient_attention=False,
            )
        self.backbone = toto.model.to(device).eval()

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.backbone.parameters())

    # -- traffic: TotoForecaster.forecast with the backbone compiled, mean and sampled paths --------
    def traffic_ranges(self) -> TrafficRanges:
        stride = int(self.backbone.patch_embed.stride)
        if self.size == "real":
            # a service's range: up to 4096 steps of history (Toto itself has no hard limit; one in six calls
            # goes past it), horizons past one patch (one decode step per patch), 1-8 variates; sampled paths
            # capped at 32 on a CPU (the README example draws 256 on a GPU)
            return TrafficRanges(batch=(1, 32), history=(64, 4096), horizon=(1, 6 * stride), max_context=4096,
                                 single_pass_horizon=stride, variates=(1, 8), samples=(1, 32), patch=stride,
                                 token_budget=16_384, options={"sampled": (False, True)})
        return TrafficRanges(batch=(1, 4), history=(16, 200), horizon=(1, 5 * stride), max_context=192,
                             single_pass_horizon=stride, variates=(1, 4), samples=(1, 8), patch=stride,
                             token_budget=2048, options={"sampled": (False, True)})

    def serve(self, compile_fn: CompileFn):
        from toto.inference.forecaster import TotoForecaster

        return self._serve_forecaster(compile_recipe(TotoForecaster(self.backbone), compile_fn))

    # -- ahead of time: the backbone's prefill and decode steps (patches/toto/aot.py) ----------------
    def export_programs(self):
        from .aot import programs

        return programs(self.backbone)

    def export_config(self) -> dict[str, Any]:
        from .aot import export_config

        return export_config(self.backbone)

    def serve_aot(self, package):
        return self._serve_forecaster(package.entry_point())

    def _serve_forecaster(self, forecaster):
        import torch

        def handle(call, data_seed: int) -> CallOutput:
            rng = np.random.default_rng(data_seed)
            shape = (call.batch, call.variates, call.history)
            values = 50.0 + np.cumsum(rng.normal(0.0, 1.0, shape), axis=-1)
            observed = np.ones(shape, dtype=bool)
            if call.history > 8:  # a gap of missing points in one variate, masked out
                start = int(rng.integers(0, call.history - 4))
                observed[0, -1, start : start + 3] = False
            sampled = bool(call.options.get("sampled")) and call.samples > 0
            with torch.no_grad():
                fc = forecaster.forecast(
                    self._masked(torch.from_numpy(values).float(), torch.from_numpy(observed)),
                    prediction_length=call.horizon, num_samples=call.samples if sampled else None,
                    samples_per_batch=call.samples if sampled else 10, use_kv_cache=True,
                )
            if sampled:  # (batch, variates, horizon, samples): compared on their distribution once compiled
                return CallOutput(None, fc.samples.float().cpu().numpy().astype(np.float64), sample_axis=-1)
            return CallOutput(fc.mean.float().cpu().numpy().astype(np.float64))

        return handle

    def describe(self) -> dict[str, Any]:
        bb = self.backbone
        return {
            "weights": self.weights_source,
            "config": {
                "patch_size": bb.patch_embed.patch_size,
                "embed_dim": bb.embed_dim,
                "num_layers": bb.num_layers,
                "layers": [type(layer.attention).__name__ for layer in bb.transformer.layers],
            },
            "workload": (
                "TotoForecaster(compiled TotoBackbone).forecast(use_kv_cache=True), mean path, batch 1 x "
                f"2 variates, context {self.workload_context}, horizons {list(self.workload_horizons)} "
                f"({[h // bb.patch_embed.stride - 1 for h in self.workload_horizons]} decode steps after the prefill)"
            ),
            "forecast": "distribution mean of TotoForecaster.forecast(num_samples=None, use_kv_cache=True); "
            "deterministic, so eager and compiled are compared directly",
            "compile_unit": "TotoBackbone (forward), passed to TotoForecaster",
        }

    def _forecaster(self, compile_fn: CompileFn):
        from toto.inference.forecaster import TotoForecaster

        return TotoForecaster(compile_fn(self.backbone))

    def _masked(self, values, observed):
        """MaskedTimeseries for (batch, variates, time) values; unobserved points are 0 and masked out."""
        import torch
        from toto.data.util.dataset import MaskedTimeseries

        batch, variates, steps = values.shape
        return MaskedTimeseries(
            series=torch.where(observed, values, torch.zeros_like(values)).to(self.device),
            padding_mask=observed.to(self.device),
            id_mask=torch.zeros(batch, variates, steps, dtype=torch.int, device=self.device),
            timestamp_seconds=torch.zeros(batch, variates, steps, dtype=torch.int, device=self.device),
            time_interval_seconds=torch.full((batch, variates), 60, dtype=torch.int, device=self.device),
        )

    def workload(self, compile_fn: CompileFn) -> None:
        import torch

        forecaster = self._forecaster(compile_fn)
        gen = torch.Generator().manual_seed(self.seed)
        values = torch.randn(1, 2, self.workload_context, generator=gen).cumsum(-1)
        inputs = self._masked(values, torch.ones_like(values, dtype=torch.bool))
        for horizon in self.workload_horizons:
            forecaster.forecast(inputs, prediction_length=horizon, use_kv_cache=True)

    def forecast(self, series: list[Series], compile_fn: CompileFn) -> list[np.ndarray]:
        import torch

        forecaster = self._forecaster(compile_fn)
        out: list[np.ndarray] = []
        # one batched call per (context length, horizon, variates) geometry
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(series):
            groups.setdefault((s.context.shape, s.truth.shape), []).append(i)
        preds: dict[int, np.ndarray] = {}
        for (ctx_shape, truth_shape), idx in groups.items():
            ctx = np.stack([np.asarray(series[i].context, dtype=np.float64) for i in idx])
            if ctx.ndim == 2:  # (batch, time) -> (batch, 1 variate, time)
                ctx = ctx[:, None, :]
            else:  # (batch, time, variates) -> (batch, variates, time)
                ctx = ctx.transpose(0, 2, 1)
            observed = torch.from_numpy(~np.isnan(ctx))
            values = torch.from_numpy(np.nan_to_num(ctx)).to(torch.float32)
            horizon = truth_shape[0]
            with torch.no_grad():
                mean = forecaster.forecast(self._masked(values, observed), prediction_length=horizon, use_kv_cache=True).mean
            mean = mean.float().cpu().numpy().astype(np.float64)  # (batch, variates, horizon)
            for j, i in enumerate(idx):
                p = mean[j, :, :horizon]
                preds[i] = p[0] if len(truth_shape) == 1 else p.T
        out = [preds[i] for i in range(len(series))]
        return out
