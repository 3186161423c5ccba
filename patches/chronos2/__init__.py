"""Chronos-2 (package ``chronos-forecasting``): the patch set (harness: ``harness.py``, ahead of time: ``aot.py``).

Hazards: ``Chronos2Model._prepare_patched_future`` validates future covariates
with ``if torch.isnan(future_covariates).any(): raise ValueError(...)``.  The
branch needs the tensor's value on the host, so Dynamo breaks the graph there,
and ``Chronos2Pipeline`` always passes (NaN-filled) future covariates, so every
pipeline forward pays for it.  Over a varied stream of ``Chronos2Pipeline.predict``
calls the compiled model also recompiled on the NaN-padding branch
(``length % patch_size``), on the strides of sliced future covariates and of a
truncated context, on the first call's static batch, history and
``num_output_patches``, and on batch 1 (Dynamo specialises size 1): fixed by
copies to canonical strides, dynamic marks up front, and a single series run as
two rows (the copy in a group of its own) when the model is compiled.  With inductor on CPU, histories
longer than 4096 compiled a graph of their own (the normaliser's float sum switches to a cascade sum there,
guarded on the length): compiled code now sums it in chunks.  And for horizons past one pass
(``max_output_patches × output_patch_size``), ``Chronos2Pipeline`` keeps each
``_predict_step`` output while it calls the model again, which a CUDA-graph
replay overwrites under ``mode="reduce-overhead"``.
"""

from __future__ import annotations

from patchkit.patchset import Package, PatchSet, PipSource, Step, TrafficSpec, UpstreamTests

PATCHSET = PatchSet(
    model="chronos2",
    title="Amazon Chronos-2 (chronos-forecasting)",
    source=PipSource(
        package="chronos-forecasting",
        dist="sdist",  # the sdist carries upstream's test/ folder and its dummy checkpoints
        include=(("src/chronos/", "chronos/"), ("test/", "test/")),
        meta=("LICENSE", "NOTICE", "PKG-INFO"),
    ),
    pin="2.3.2",
    known_versions=("2.0.0", "2.0.1", "2.1.0", "2.2.0", "2.2.1", "2.2.2", "2.3.0", "2.3.1", "2.3.2"),
    steps=(
        Step(
            codemod="isnan-guard",
            files=("chronos/chronos2/model.py",),
            options={"mode": "gate", "functions": ["_prepare_patched_future"]},
            why="`if torch.isnan(...).any(): raise` in _prepare_patched_future breaks the graph on every forward",
        ),
        Step(
            codemod="branch-free-pad",
            files=("chronos/chronos_bolt.py",),
            options={"function": "forward", "class_name": "Patch"},
            why="Patch.forward pads only when the length is not a multiple of 16: a guard and a graph per class",
        ),
        Step(
            codemod="chunked-reduction",
            files=("chronos/chronos_bolt.py",),
            options={"function": "forward", "class_name": "InstanceNorm", "reductions": ["nanmean"]},
            why="InstanceNorm's nanmean over the history: inductor's CPU cascade sum guards on 4096 elements",
        ),
        Step(
            codemod="contiguous-step-inputs",
            files=("chronos/chronos2/pipeline.py",),
            options={"function": "_predict_step", "calls": ["model"], "keywords": ["context"],
                     "assigned": ['kwargs["future_covariates"]']},
            why="_predict_step passes views or fresh tensors by turns: guards on their strides recompile",
        ),
        Step(
            codemod="dynamic-step-inputs",
            files=("chronos/chronos2/pipeline.py",),
            options={"function": "_predict_step", "calls": ["model"],
                     "keywords": {"context": [0, 1], "group_ids": [0]},
                     "assigned": {'kwargs["future_covariates"]': [0, 1]}, "ints": ["num_output_patches"]},
            why="batch, history and num_output_patches vary per call: compiled static on the first call",
        ),
        Step(
            codemod="pad-single-row",
            files=("chronos/chronos2/pipeline.py",),
            options={"function": "_predict_step", "calls": ["model"], "rows": ["context", "future_covariates"],
                     "distinct": ["group_ids"], "outputs": ["quantile_preds"]},
            why="a single series is a size-1 batch, which Dynamo specialises: one more graph per class",
        ),
        Step(
            codemod="clone-step-output",
            files=("chronos/chronos2/pipeline.py",),
            options={"function": "_predict_step", "calls": ["model"], "clone": ["prediction"]},
            why="results kept across calls are overwritten by the next CUDA-graph replay",
        ),
    ),
    harness="patchkit.patches.chronos2.harness:Chronos2Harness",
    aot_runtime="patchkit.patches.chronos2.aot:pipeline",
    compile_recipe="patchkit.patches.chronos2.harness:compile_recipe",
    compile_targets=("Chronos2Pipeline", "Chronos2Model"),
    provides=("chronos",),
    # upstream's test/ folder sits beside chronos/ and is not in `provides`, so it is never shipped
    package=Package(dist="chronos-forecasting", summary="Chronos-2 time-series forecasting (amazon/chronos-2)",
                    requirements="PKG-INFO", upstream_dist="chronos-forecasting",
                    probe="chronos.chronos2.pipeline"),
    upstream_tests=UpstreamTests(
        paths=("test/test_chronos2.py", "test/test_chronos_bolt.py", "test/test_utils.py"),
        deselect={
            "loads_from_hf": "downloads a checkpoint from the Hugging Face Hub (no network)",
            "loads_from_huggingface": "downloads a checkpoint from the Hugging Face Hub (no network)",
            "loads_from_s3": "downloads a checkpoint from S3 (no network)",
            "dummy_fev_task": "fev loads its task data set from the Hugging Face Hub (no network)",
        },
        extras=("test",),
    ),
    mae_tolerance=1e-3,
    hazards=("graph_breaks",),
    traffic=TrafficSpec(graph_budget={"model": 2}, phases={"model": ("forecast",)}),
)
