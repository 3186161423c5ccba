"""Toto (package ``toto-ts``): patch set and verify harness.

Hazards, all on the KV-cache decode path of ``TotoForecaster.forecast``
(``use_kv_cache=True``, the default):

* ``KVCache`` maps layers to cache slots and reads its fill counters with
  ``int(tensor.item())``, asserts ``end <= max_seq_len`` on a tensor, writes
  with tensor-bounded slices and returns K/V sliced to the filled length: graph
  breaks in every attention layer, and K/V shapes that grow every step;
* the attention passes ``is_causal=(mask is None and offset == 0)``, which
  cannot hold a tensor or symbolic offset;
* the backbone slices the input to the new patch with a prefix length read
  from the cache (``.item()``);
* the forecaster grows its inputs by one patch per step (``torch.cat``), so
  every step has new shapes;
* over a stream of forecasts, the backbone is compiled static in the first
  call's batch, variates, history (``scaling_prefix_length``) and KV-cache
  sizes, and Dynamo specialises batch 1 and one variate: batch {1, more} x
  variates {1, more} x prefill/decode, plus the static first graph, is past
  the recompile limit of 8.  Marked dynamic up front (ints as ``DynamicInt``)
  and with a single series run as two rows when the backbone is compiled, a
  stream needs one graph per variates class and phase: 4;
* a one-patch history (64 steps) is a patch count of 1, which the linear
  layers' reshape view checks specialise (``Ne(b*v*(T//64), b)``): its
  prefill compiled a third prefill class.  With the backbone compiled, that
  one prefill (one patch through the backbone) runs the backbone's eager
  code (``eager-when``) and its decode steps the compiled graph;
* with inductor on CPU, the scaler's float32 sum over the whole history
  switches to a cascade sum past 4096 elements, guarded on the length:
  histories past 4096 steps doubled those graphs (compiled code now sums it
  in chunks).

Measured with TotoHarness.workload (4 layers, 1 prefill + 16 and 8 decode
steps; torch 2.13 CPU): upstream 25 graph breaks (+8 data-dependent ones
counted as unimplemented), 27 recompiles, 37 graphs, fullgraph fails; patched
0 breaks, 2 graphs (prefill, decode step), 1 recompile (the switch from the
prefill graph to the decode graph in the first call, none after it), and the
workload compiles with ``fullgraph=True``.

Not covered: the xFormers path (``use_memory_efficient_attention=True``,
GPU only): its cache reads keep the growing, sliced shape, so it still breaks
under compile; and the variate-label fusion path (finetuning with exogenous
variables), which still reads the cache length in ``Transformer.forward``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from patchkit.patchset import is_a, Package, PatchSet, PipSource, Step, TrafficSpec, UpstreamTests
from patchkit.verify.harness import CallOutput, CompileFn, Harness, Series
from patchkit.verify.traffic import TrafficRanges

_CACHE = "KVCache"

PATCHSET = PatchSet(
    model="toto",
    title="Datadog Toto (toto-ts)",
    source=PipSource(
        package="toto-ts",
        dist="wheel",  # the wheel carries toto/test/
        include=(("toto/", "toto/"),),
        # evaluation harnesses and scripts pull in benchmark-only dependencies
        exclude=("toto/evaluation/", "toto/scripts/"),
        meta=("*.dist-info/licenses/*", "*.dist-info/METADATA"),
    ),
    pin="0.2.0",
    known_versions=("0.1.3", "0.1.4", "0.2.0"),
    steps=(
        Step(
            codemod="item-scalar",
            files=("toto/model/util.py",),
            options={"tables": ["_layer_cache_map"], "class_name": _CACHE},
            why="KVCache.__getitem__/seq_len/append look up the layer's cache slot with "
            "int(self._layer_cache_map[layer_idx].item()): a host sync and graph break per attention "
            "layer, although the map is fixed in __post_init__",
        ),
        Step(
            codemod="static-kv-cache",
            files=("toto/model/util.py",),
            options={
                "class_name": _CACHE,
                "keys_attr": "_keys",
                "values_attr": "_values",
                "index_attr": "_current_idx",
                "max_len_attr": "max_seq_len",
                "init_method": "__post_init__",
                "append_method": "append",
                "reset_method": "reset",
                "position_method": "seq_pos",
                "read_method": "read_full",
                "empty_method": "is_empty",
                "flag_attr": "_host_empty",
                # memory_efficient_attention gets no mask for the static buffers: keep its sliced read
                "sliced_read_when": "use_memory_efficient_attention",
                # the buffers hold batch x variates rows: one graph for every batch and variate count
                "row_dims": [1],
            },
            after=("item-scalar",),  # matches the host slot lookup item-scalar writes
            why="KVCache.append asserts `end_idx <= self.max_seq_len` on a tensor and writes "
            "self._keys[c, :, :, start_idx:end_idx, :] with tensor bounds (graph breaks); readers get "
            "K/V sliced to the filled length (growing shapes, a recompile per step)",
        ),
        Step(
            codemod="kv-cache-callsites",
            files=("toto/model/attention.py", "toto/model/transformer.py"),
            options={
                "receivers": ["kv_cache"],
                "renames": {"seq_len": "seq_pos"},
                "subscript_method": "read_full",
            },
            after=("static-kv-cache",),  # calls seq_pos() and read_full(), which static-kv-cache adds
            why="BaseMultiheadAttention.positional_embedding takes the RoPE offset from "
            "kv_cache.seq_len() (.item()) and reads kv_cache[layer_idx] (sliced, growing); "
            "Transformer.forward also calls kv_cache.seq_len(1)",
        ),
        Step(
            codemod="offset-causal-mask",
            files=("toto/model/attention.py",),
            options={"helper": "_offset_causal_mask"},
            after=("kv-cache-callsites",),  # the offset it masks with is the tensor seq_pos() gives
            why="run_attention passes is_causal=(attention_mask is None and seq_pos_offset == 0) to "
            "scaled_dot_product_attention: data-dependent with a tensor offset, TypeError (not SymBool) "
            "with a symbolic one; the full cache buffers also need a mask over unfilled positions",
        ),
        Step(
            codemod="decode-prefix-slice",
            files=("toto/model/backbone.py",),
            options={
                "receivers": ["kv_cache"],
                "empty_method": "is_empty",
                # upstream's prefix read without .item(): 0.2 computes stride * (current_len(0) - prepended)
                # clamped at 0, 0.1.x stride * current_len(0) (no prepended tokens); under compile a call feeding
                # more than one new patch raises instead of dropping patches
                "prefix_tensor": "torch.clamp(self.patch_embed.stride * (kv_cache._current_idx[0] "
                "- getattr(self, 'num_prepended_tokens', 0)), min=0)",
            },
            after=("static-kv-cache",),
            why="TotoBackbone.backbone slices the inputs to the new patch at "
            "prefix_len = stride * (kv_cache.current_len(0) - prepended): .item() and a per-step int",
        ),
        Step(
            codemod="mark-growing-dynamic",
            files=("toto/inference/forecaster.py",),
            options={"calls": ["self.model"]},
            why="generate_mean/generate_samples grow inputs, id_mask and input_padding_mask by one patch "
            "per step with torch.cat before calling the model: a recompile on the second step and "
            "again for every horizon",
        ),
        *(Step(
            codemod="dynamic-step-inputs",
            files=("toto/inference/forecaster.py",),
            options={"function": function, "calls": ["model"],
                     "keywords": {"inputs": [0, 1], "input_padding_mask": [0, 1], "id_mask": [0, 1]},
                     "ints": ["scaling_prefix_length"]},
            why=f"{function} calls the backbone with the caller's batch x variates and the history length as "
            "scaling_prefix_length: compiled static on the first call, the backbone recompiles for the next "
            "forecast's batch, variates and history",
        ) for function in ("generate_mean", "generate_samples")),
        *(Step(
            codemod="dynamic-step-inputs",
            files=("toto/inference/forecaster.py",),
            options={"function": function, "calls": ["allocate_kv_cache"], "ints": ["batch_size", "num_variates"],
                     "gate": "self.model"},
            why=f"{function} sizes the KV cache with batch_size and num_variates ints that KVCache.append checks "
            "(`keys.shape[0] == self.batch_size * self.num_variates`): the first graph is specialised to them",
        ) for function in ("generate_mean", "generate_samples")),
        Step(
            codemod="pad-single-row",
            files=("toto/inference/forecaster.py",),
            options={"function": "forecast", "calls": ["generate_mean"], "gate": "self.model",
                     "rows": ["inputs", "timestamp_seconds", "time_interval_seconds", "input_padding_mask", "id_mask", "future_exogenous_variables"]},
            why="forecast on one series is a size-1 batch, which Dynamo specialises: with one variate or "
            "more, and prefill or decode, 8 graph classes, past the recompile limit; batch rows never interact "
            "in the backbone, so with the backbone compiled generate_mean runs the series twice and keeps the first",
        ),
        Step(
            codemod="eager-when",
            files=("toto/inference/forecaster.py",),
            options={"function": "generate_mean", "calls": ["model"], "when": "inputs.shape[-1] == patch_size"},
            why="a one-patch history (64 steps) is a patch count of 1, which Dynamo specialises (the reshape view "
            "checks of the linear layers, `Ne(b*v*(T//64), b)`, broadcasting, einops): its prefill compiled a graph "
            "of its own, a third prefill class beside one variate and the rest; padding it is not exact (Toto "
            "attends to padded patches), so with the backbone compiled that one prefill (one patch through the "
            "backbone, the cheapest call there is) runs the backbone's eager code and its decode steps the "
            "compiled graph",
        ),
        Step(
            codemod="eager-when",
            files=("toto/inference/forecaster.py",),
            options={"function": "generate_samples", "calls": ["model"],
                     "when": "batch_inputs.shape[-1] == patch_size or batch_inputs.shape[0] == 1"},
            why="generate_samples: the one-patch prefill as in generate_mean; and one sampled path of one series "
            "is a single backbone row, which Dynamo specialises.  Padding it to two rows (pad-single-row) keeps one "
            "graph but draws samples for both rows from the global generator, so from the second step on the "
            "series' draws are no longer upstream's for the same seed (held-out traffic seeds 0 and 1, 48 calls: "
            "quantiles 13-18 % apart on such calls); those calls run the backbone's eager code instead",
        ),
        Step(
            codemod="chunked-reduction",
            files=("toto/model/scaler.py",),
            options={"function": "compute_causal_statistics", "reductions": ["sum"], "dims": ["dim"]},
            why="with stabilize_with_global, compute_causal_statistics sums the float32 weights over the whole "
            "history (`(weights * padding_mask).sum(dim, keepdim=True)`, dim asserted -1): inductor's CPU code uses "
            "a cascade sum past 4096 elements and guards on it (`weights.size()[2] <= 4096`), so histories past "
            "4096 steps compiled graphs of their own in both phases (its float64 sums take no such helper and "
            "run as upstream's when compiled)",
        ),
    ),
    harness="patchkit.patches.toto:TotoHarness",
    aot_runtime="patchkit.patches.toto_aot:forecaster",
    compile_recipe="patchkit.patches.toto:compile_recipe",
    compile_targets=("TotoForecaster", "TotoBackbone"),
    provides=("toto",),
    package=Package(dist="toto-ts", summary="Toto time-series foundation model (Datadog)", requirements="METADATA",
                    upstream_dist="toto-ts", exclude=("toto/test/",), probe="toto.inference.forecaster"),
    # toto/test: 17 tests (forecaster with a mocked backbone, gluonts predictor, fusion with a
    # KVCache in eager, scalers); attention_test.py defines fixtures only.  Needs beartype.
    upstream_tests=UpstreamTests(
        paths=("toto/test",),
        deselect={},
        args=("-p", "no:cacheprovider"),
    ),
    mae_tolerance=1e-3,
    # the decode frame compiles twice: the prefill graph, then the one-patch decode-step graph
    warmup_recompiles=1,
    hazards=("graph_breaks", "recompiles"),
    traffic=TrafficSpec(
        graph_budget={"backbone": 4}, phases={"backbone": ("prefill", "decode")},
        sample_rtol=0.05,
        sample_note="samples are drawn eagerly by TotoForecaster from the compiled backbone's distribution; the "
                    "same seed gives the same draws unless compiled drift flips a mixture component, so the "
                    "10/50/90% quantiles are compared within 5%",
    ),
    notes="Forecasts compared on the mean of the output distribution (generate_mean, deterministic).",
)


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

    # -- ahead of time: the backbone's prefill and decode steps (patches/toto_aot.py) ----------------
    def export_programs(self):
        from .toto_aot import programs

        return programs(self.backbone)

    def export_config(self) -> dict[str, Any]:
        from .toto_aot import export_config

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
