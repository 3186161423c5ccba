"""The contract between verify and a model: build it, drive its hazard path, forecast.

A harness runs inside a verify subprocess whose ``sys.path`` starts with one
vendored tree (pristine upstream or patched), so ``import chronos`` (or toto,
or model) loads that tree.  Harness classes live with their patch set in
``patches/`` because they are model knowledge; this module only fixes the
interface; the data types are in ``protocol.py`` (imported here too, so either spelling works).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from .datasets import standard_series
from .protocol import SIZES, CallOutput, CompileFn, Exportable, ExportProgram, Series, Size, TrafficServing

def eager(fn: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
    """The identity ``CompileFn``: run eagerly."""
    return fn


class Compiler:
    """A ``CompileFn`` that counts the graphs Dynamo hands to the backend, per named compiled unit.

    Each ``compiler(fn, name="backbone")`` call compiles ``fn`` with its own
    counting backend, so every graph of that unit (resume frames after a graph
    break included) is attributed to ``name``.  ``backend=None`` is eager: ``fn``
    is returned as it is and nothing is counted.
    """

    def __init__(self, backend: str | None = "inductor", *, mode: str | None = None, fullgraph: bool = False,
                 dynamic: bool | None = None) -> None:
        self.backend, self.mode, self.fullgraph, self.dynamic = backend, mode, fullgraph, dynamic
        self.graphs: dict[str, int] = {}

    def _inner(self):
        import torch
        from torch._dynamo.backends.registry import lookup_backend

        if self.backend == "inductor":
            return torch._TorchCompileInductorWrapper(self.mode or "default", None, self.dynamic)
        return lookup_backend(self.backend)

    def __call__(self, fn: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
        if self.backend is None:
            return fn
        import torch

        unit = name or getattr(fn, "__qualname__", None) or type(fn).__name__
        self.graphs.setdefault(unit, 0)
        inner = self._inner()
        graphs = self.graphs

        class _Counting:
            def __call__(self, gm, example_inputs):
                graphs[unit] += 1
                return inner(gm, example_inputs)

            def __getattr__(self, key):
                return getattr(inner, key)

        return torch.compile(fn, backend=_Counting(), fullgraph=self.fullgraph, dynamic=self.dynamic)


class Harness(ABC):
    """What every model harness does: build the model at a size, describe it, drive its hazard path
    (``workload``) and forecast evaluation series.  What only some harnesses do is a protocol of its own
    (``protocol.TrafficServing``: ``verify --traffic`` and the bench traffic row; ``protocol.Exportable``:
    ``export`` and ``verify --aot``); ``require(harness, capability)`` refuses a harness without it."""

    #: registry name of the model (matches its patch set)
    model: str = ""
    #: model sizes this harness builds: "tiny" (tests, fast) and "real" (the published architecture)
    sizes: ClassVar[tuple[str, ...]] = ("tiny",)

    def __init__(self, tree: Path, weights: str | None = None, seed: int = 0, device: str = "cpu",
                 size: str = "tiny") -> None:
        self.tree = Path(tree)
        self.weights = weights
        self.seed = seed
        self.device = device
        if size not in self.sizes:
            raise ValueError(f"{self.model} harness builds sizes {', '.join(self.sizes)}, not {size!r}")
        self.size = size

    def parameter_count(self) -> int:
        """Parameters of the model(s) built; reported with the size."""
        raise NotImplementedError

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What was built (weights source, config sizes) and what the workload does, for the report."""

    @abstractmethod
    def workload(self, compile_fn: CompileFn) -> None:
        """Drive the path that breaks upstream, wrapping the model parts with ``compile_fn``.

        Verify resets Dynamo and its counters before calling this, and reads
        graph breaks, graphs and recompiles afterwards.  Call it with
        ``torch.compile(fullgraph=True)`` to check for a single graph.
        """

    @abstractmethod
    def forecast(self, series: list[Series], compile_fn: CompileFn) -> list[np.ndarray]:
        """Point forecasts, one array shaped like each ``series[i].truth``."""

    #: set by the default ``to_dtype``: the dtype each bench forecast runs under ``torch.autocast``
    autocast_dtype: str | None = None

    def to_dtype(self, dtype: str) -> None:
        """Set the dtype of a bench row ("float32", "bfloat16").

        Default: float32 as built; bfloat16 runs each forecast under
        ``torch.autocast(device, torch.bfloat16)``, the way a user runs an upstream
        that has no bfloat16 path of its own (Toto, Kronos).  A harness whose
        upstream loads bfloat16 weights (Chronos-2) overrides this and casts them.
        """
        if dtype == "float32":
            self.autocast_dtype = None
        elif dtype == "bfloat16":
            self.autocast_dtype = dtype
        else:
            raise NotImplementedError(f"{self.model} harness has no {dtype} path")

    def bench_fn(self, compile_fn: CompileFn, batch: int) -> tuple[list[Series], Callable[[], list[np.ndarray]]]:
        """The unit ``patchkit bench`` times: one forecast of ``batch`` evaluation series.

        Returns the series (for MAE) and a zero-argument callable; the model is
        wrapped with ``compile_fn`` once, outside the timed call.
        """
        base = self.series()
        series = [base[i % len(base)] for i in range(batch)]
        wrapped = self.prepare(compile_fn)
        if self.autocast_dtype is None:
            return series, lambda: self.forecast(series, wrapped)
        import torch

        device_type, dtype = torch.device(self.device).type, getattr(torch, self.autocast_dtype)

        def under_autocast() -> list[np.ndarray]:
            with torch.autocast(device_type=device_type, dtype=dtype):
                return self.forecast(series, wrapped)

        return series, under_autocast

    def prepare(self, compile_fn: CompileFn) -> CompileFn:
        """Wrap once for repeated calls; by default ``forecast`` gets a compile_fn that returns
        the already-compiled object for whatever it wraps."""
        cache: dict[tuple[int, int], Any] = {}

        def once(fn):
            key = (id(getattr(fn, "__self__", None)), id(getattr(fn, "__func__", fn)))
            if key not in cache:
                cache[key] = compile_fn(fn)
            return cache[key]

        return once

    def series(self) -> list[Series]:
        """The evaluation series; default: patchkit's synthetic stress set plus real data."""
        return standard_series(context_length=self.context_length, horizon=self.horizon)

    #: evaluation geometry, overridable per model
    context_length: int = 256
    horizon: int = 32


def require(harness: Harness, capability: type) -> Any:
    """``harness`` when it implements ``capability`` (``TrafficServing`` or ``Exportable``); else
    ``NotImplementedError`` naming what the model's harness lacks."""
    if not isinstance(harness, capability):
        what = {TrafficServing: "has no traffic entry point", Exportable: "has no ahead-of-time export yet"}
        raise NotImplementedError(f"{harness.model} harness {what.get(capability, f'is not {capability.__name__}')}")
    return harness


__all__ = ["SIZES", "Exportable", "TrafficServing", "require", "CallOutput", "CompileFn", "Compiler", "ExportProgram", "Harness", "Series", "Size", "eager"]
