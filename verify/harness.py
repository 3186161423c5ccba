"""The contract between verify and a model: build it, drive its hazard path, forecast.

A harness runs inside a verify subprocess whose ``sys.path`` starts with one
vendored tree (pristine upstream or patched), so ``import chronos`` (or toto,
or model) loads that tree.  Harness classes live with their patch set in
``patches/`` because they are model knowledge; this module only fixes the
interface and the data types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: ``compile_fn(fn) -> fn``: ``torch.compile`` with some options, or identity for eager.
CompileFn = Callable[[Callable[..., Any]], Callable[..., Any]]


def eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The identity ``CompileFn``: run eagerly."""
    return fn


@dataclass(frozen=True)
class Series:
    """One evaluation series: ``context`` (T,) or (T, F), held-back ``truth`` (H,) or (H, F)."""

    name: str
    context: np.ndarray
    truth: np.ndarray
    source: str  # "synthetic" or where the real data came from


class Harness(ABC):
    #: registry name of the model (matches its patch set)
    model: str = ""

    def __init__(self, tree: Path, weights: str | None = None, seed: int = 0, device: str = "cpu") -> None:
        self.tree = Path(tree)
        self.weights = weights
        self.seed = seed
        self.device = device

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

    def to_dtype(self, dtype: str) -> None:
        """Cast the model for a bench row ("float32", "bfloat16").  Default: float32 only."""
        if dtype != "float32":
            raise NotImplementedError(f"{self.model} harness has no {dtype} path")

    def bench_fn(self, compile_fn: CompileFn, batch: int) -> tuple[list[Series], Callable[[], list[np.ndarray]]]:
        """The unit ``patchkit bench`` times: one forecast of ``batch`` evaluation series.

        Returns the series (for MAE) and a zero-argument callable; the model is
        wrapped with ``compile_fn`` once, outside the timed call.
        """
        base = self.series()
        series = [base[i % len(base)] for i in range(batch)]
        wrapped = self.prepare(compile_fn)
        return series, lambda: self.forecast(series, wrapped)

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
        from .datasets import standard_series

        return standard_series(context_length=self.context_length, horizon=self.horizon)

    #: evaluation geometry, overridable per model
    context_length: int = 256
    horizon: int = 32
