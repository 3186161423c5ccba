"""The data a model harness and verify exchange: what a call returned, one evaluation series, one exported
program, and the compile function a harness is handed.

Nothing here imports patchkit or torch: patch sets, runners, reports and the ahead-of-time exporter all speak
these types, so each can import them without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only
    import numpy as np

#: ``compile_fn(fn, name=None) -> fn``: ``torch.compile`` with some options, or identity for eager.
#: ``name`` names the compiled unit (for graph budgets); plain ``torch.compile`` partials are accepted
#: where no name is passed.
CompileFn = Callable[..., Callable[..., Any]]

Size = Literal["tiny", "real"]
SIZES: tuple[str, ...] = ("tiny", "real")



@dataclass(frozen=True)
class CallOutput:
    """What one traffic call returned, as arrays verify can compare.

    ``point``: the deterministic outputs (Chronos quantiles, Toto's distribution
    mean, Kronos's greedy path, ...). ``samples``: sampled paths with the sample
    axis at ``sample_axis`` (None when the call drew none).
    """

    point: np.ndarray | None
    samples: np.ndarray | None = None
    sample_axis: int = 0


@dataclass(frozen=True)
class Series:
    """One evaluation series: ``context`` (T,) or (T, F), held-back ``truth`` (H,) or (H, F)."""

    name: str
    context: np.ndarray
    truth: np.ndarray
    source: str  # "synthetic" or where the real data came from


@dataclass
class ExportProgram:
    """One program of an ahead-of-time package (``patchkit export``).

    ``module`` is called with ``args``; ``dynamic_shapes`` is what
    ``torch.export.export`` takes; ``ranges`` names each dynamic dimension's
    bounds (inclusive) for the package record and the runtime's range errors;
    ``static`` names the sizes this program fixes (e.g. ``{"output_patches": 1}``).
    """

    name: str
    module: Any
    args: tuple
    dynamic_shapes: Any
    ranges: dict[str, list[int]]
    static: dict[str, int]
    #: trace with Dynamo (``strict=True``): turns upstream's ``assert tensor`` into runtime asserts
    strict: bool = False
    #: a context-manager factory entered around the export (e.g. distribution argument validation off)
    context: Any = None


@runtime_checkable
class TrafficServing(Protocol):
    """A harness that serves the traffic profile through the upstream's own entry point (``verify --traffic``,
    the bench traffic row, ``cache warm``)."""

    def traffic_ranges(self) -> Any:
        """Where this model's traffic calls are drawn from, at the harness's size (a ``traffic.TrafficRanges``)."""

    def serve(self, compile_fn: CompileFn) -> Callable[[Any, int], CallOutput]:
        """Build the users' entry point once (compiling its units with ``compile_fn``, each with a ``name=``) and
        return ``handle(call, data_seed) -> CallOutput`` (``call``: a ``traffic.Call``).

        ``handle`` makes the call's input data from ``data_seed`` alone (the same seed gives the same data in
        every variant and process) and drives the upstream's public inference API.  Verify seeds torch's global
        RNG with ``data_seed`` right before each call, so sampled paths are reproducible."""


@runtime_checkable
class Exportable(Protocol):
    """A harness whose compiled units export ahead of time (``patchkit export``, ``verify --aot``)."""

    def export_programs(self) -> list[ExportProgram]:
        """The compiled units to export, each with dynamic dims bounded by the model's real limits."""

    def export_config(self) -> dict[str, Any]:
        """What the runtime needs besides the programs to rebuild the users' entry point (a model config)."""

    def serve_aot(self, package: Any) -> Callable[[Any, int], CallOutput]:
        """``serve`` for a loaded package (``patchkit.runtime.load_package``): the same calls, run by the package
        through the upstream-style object it builds."""


__all__ = ["SIZES", "CallOutput", "CompileFn", "ExportProgram", "Exportable", "Series", "Size", "TrafficServing"]
