"""Toto (package ``toto-ts``): the patch set (harness: ``harness.py``, ahead of time: ``aot.py``).

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

Measurements: docs/history.md (*Toto patch set, first measurement*).

Not covered: the xFormers path (``use_memory_efficient_attention=True``,
GPU only): its cache reads keep the growing, sliced shape, so it still breaks
under compile; and the variate-label fusion path (finetuning with exogenous
variables), which still reads the cache length in ``Transformer.forward``.
"""

from __future__ import annotations

from patchkit.patchset import Package, PatchSet, PipSource, Step, TrafficSpec, UpstreamTests

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
            why="KVCache looks up its slot with int(tensor.item()): a host sync and break per layer",
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
            why="KVCache.append asserts and slices with tensor bounds; reads grow a step at a time",
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
            why="attention reads the RoPE offset with .item() and the cache sliced to its fill",
        ),
        Step(
            codemod="offset-causal-mask",
            files=("toto/model/attention.py",),
            options={"helper": "_offset_causal_mask"},
            after=("kv-cache-callsites",),  # the offset it masks with is the tensor seq_pos() gives
            why="is_causal=(mask is None and offset == 0) is data-dependent with a tensor offset",
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
            why="the backbone slices to the new patch at an .item() prefix length",
        ),
        Step(
            codemod="mark-growing-dynamic",
            files=("toto/inference/forecaster.py",),
            options={"calls": ["self.model"]},
            why="inputs grow one patch per step (torch.cat): a recompile per step and horizon",
        ),
        *(Step(
            codemod="dynamic-step-inputs",
            files=("toto/inference/forecaster.py",),
            options={"function": function, "calls": ["model"],
                     "keywords": {"inputs": [0, 1], "input_padding_mask": [0, 1], "id_mask": [0, 1]},
                     "ints": ["scaling_prefix_length"]},
            why=f"{function}: batch x variates and history length static in the first graph",
        ) for function in ("generate_mean", "generate_samples")),
        *(Step(
            codemod="dynamic-step-inputs",
            files=("toto/inference/forecaster.py",),
            options={"function": function, "calls": ["allocate_kv_cache"], "ints": ["batch_size", "num_variates"],
                     "gate": "self.model"},
            why=f"{function} sizes the KV cache with ints the first graph specialises",
        ) for function in ("generate_mean", "generate_samples")),
        Step(
            codemod="pad-single-row",
            files=("toto/inference/forecaster.py",),
            options={"function": "forecast", "calls": ["generate_mean"], "gate": "self.model",
                     "rows": ["inputs", "timestamp_seconds", "time_interval_seconds", "input_padding_mask", "id_mask", "future_exogenous_variables"]},
            why="a single series is a size-1 batch, which Dynamo specialises: past the recompile limit",
        ),
        Step(
            codemod="eager-when",
            files=("toto/inference/forecaster.py",),
            options={"function": "generate_mean", "calls": ["model"], "when": "inputs.shape[-1] == patch_size"},
            why="a one-patch history is a patch count of 1, which Dynamo specialises: a prefill class of its own",
        ),
        Step(
            codemod="eager-when",
            files=("toto/inference/forecaster.py",),
            options={"function": "generate_samples", "calls": ["model"],
                     "when": "batch_inputs.shape[-1] == patch_size or batch_inputs.shape[0] == 1"},
            why="one-patch prefills, and one sampled series (a single row): padding would change the draws",
        ),
        Step(
            codemod="chunked-reduction",
            files=("toto/model/scaler.py",),
            options={"function": "compute_causal_statistics", "reductions": ["sum"], "dims": ["dim"]},
            why="the scaler's float32 sum: inductor's CPU cascade sum guards on 4096 elements",
        ),
    ),
    harness="patchkit.patches.toto.harness:TotoHarness",
    aot_runtime="patchkit.patches.toto.aot:forecaster",
    compile_recipe="patchkit.patches.toto.harness:compile_recipe",
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
