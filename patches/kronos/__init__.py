"""Kronos (github.com/shiyu-coder/Kronos): the patch set (harness: ``harness.py``, ahead of time: ``aot.py``).

Kronos has no releases; it is vendored from git at a pinned commit, ``model/``
only.  Its decode loop (``auto_regressive_inference``) calls ``Kronos.decode_s1``
and ``Kronos.decode_s2`` once per generated bar on a window that grows by one
token per step until it reaches ``max_context``.  Compiled as they are:

* the rotary cache writes ``seq_len_cached``/``cos_cached``/``sin_cached`` on
  the module in forward, so each new window length recompiles decode_s1
  (a guard on the int attribute) until ``recompile_limit`` (8) is hit and the
  function silently runs eagerly; under CUDA graphs the cached tensors are
  graph outputs read back after their memory was reused;
* decode_s1's ``context`` output is handed to decode_s2 (the ``g(f(x))``
  CUDA-graph-tree failure);
* when the window saturates the loop passes the whole token buffer instead of
  a view of it, changing stride relations and recompiling once more.
"""

from __future__ import annotations

from pathlib import Path

from patchkit.patchset import Package, GitSource, PatchSet, Step, TrafficSpec

PIN = "67b630e67f6a18c9e9be918d9b4337c960db1e9a"

PATCHSET = PatchSet(
    model="kronos",
    weights_dirs=("MODEL_DIR", "TOKENIZER_DIR"),
    title="Kronos (shiyu-coder/Kronos): foundation model for candlestick (OHLCV) series",
    source=GitSource(url="https://github.com/shiyu-coder/Kronos", include=(("model/", "model/"),),
                     meta=("LICENSE", "requirements.txt")),
    # verify's real OHLCV bars come from the arch wheel
    isolated_requires=("arch>=7",),
    pin=PIN,
    known_versions=(PIN,),
    steps=(
        Step(
            codemod="rope-static-cache",
            files=("model/module.py",),
            options={
                "class_name": "RotaryPositionalEmbedding",
                "cache_method": "_update_cos_sin_cache",
                "compute_method": "_compute_cos_sin",
                "length_attr": "seq_len_cached",
                "cache_attrs": ("cos_cached", "sin_cached"),
            },
            why="the rotary cache is written in forward: a recompile per window length, then silent eager",
        ),
        Step(
            codemod="cudagraph-step",
            files=("model/kronos.py",),
            options={
                "function": "auto_regressive_inference",
                "step_calls": ("decode_s1", "decode_s2"),
                "clone": ("context",),
            },
            why="decode_s1 then decode_s2 per step under CUDA graphs: decode_s1's output is overwritten",
        ),
        Step(
            codemod="contiguous-step-inputs",
            files=("model/kronos.py",),
            options={"function": "auto_regressive_inference", "calls": ("decode_s1",), "args": (0, 1)},
            why="decode_s1 gets window views, then the whole buffer: the stride relation recompiles",
        ),
        Step(
            codemod="dynamic-step-inputs",
            files=("model/kronos.py",),
            options={"function": "auto_regressive_inference", "calls": ("decode_s1", "decode_s2"), "dims": (0, 1)},
            why="batch x samples rows and a growing window: compiled static on the first call",
        ),
        Step(
            codemod="step-cache",
            files=("model/kronos.py",),
            options={
                "function": "auto_regressive_inference",
                "receiver": "model",
                "calls": ("decode_s1", "decode_s2"),
                "cache_class": "_PatchkitDecodeCache",
                "cache_args": ("model", "max_context"),
                "cache_var": "_kv",
                "helper": (Path(__file__).with_name("decode_cache.py")).read_text(encoding="utf-8"),
            },
            after=("cudagraph-step", "contiguous-step-inputs", "dynamic-step-inputs"),
            why="every step reruns the whole window through every layer: O(window) work per bar",
        ),
    ),
    harness="patchkit.patches.kronos.harness:KronosHarness",
    aot_runtime="patchkit.patches.kronos.aot:predictor",
    compile_recipe="patchkit.patches.kronos.harness:compile_recipe",
    compile_targets=("KronosPredictor", "Kronos"),
    provides=("model",),
    # upstream has no packaging and imports itself as the bare name `model`: ship it as `kronos`
    package=Package(dist="kronos-patched", summary="Kronos foundation model for financial candlesticks",
                    requirements="requirements.txt", rename=(("model", "kronos"),), probe="kronos.kronos"),
    # dynamic-step-inputs: decode_s1 and decode_s2 each compile one dynamic graph on the first call
    warmup_recompiles=0,
    hazards=("recompiles", "recompile_limit"),
    traffic=TrafficSpec(
        # decode_s1/decode_s2: the rolled-window steps (full recompute); step_s1/step_s2: the cached growing-window
        # steps of the step-cache, static shapes
        graph_budget={"decode_s1": 2, "decode_s2": 2, "step_s1": 2, "step_s2": 2},
        phases={"decode_s1": ("decode",), "decode_s2": ("decode",), "step_s1": ("decode",), "step_s2": ("decode",)},
        sample_rtol=0.1,
        sample_note="KronosPredictor returns the mean of sample_count top-p paths drawn eagerly from the compiled "
                    "decoders' logits: the same seed gives the same paths unless compiled logit drift flips a drawn "
                    "token, so compiled outputs are compared within 10% relative L2",
    ),
    notes=(
        "Forecasts are compared with top_k=1 (greedy: the sampler keeps one token, multinomial over a "
        "one-hot distribution is deterministic) and a fixed seed.  Seeded random weights unless --weights "
        "names two local checkpoint directories, MODEL_DIR,TOKENIZER_DIR."
    ),
)
