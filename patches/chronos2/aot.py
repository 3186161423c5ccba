"""Chronos-2 ahead of time: the unit ``patchkit export`` exports, and the model the runtime puts in its place.

The exported unit is ``Chronos2Model.forward`` exactly as ``Chronos2Pipeline``
calls it: ``context``, ``group_ids`` and NaN-or-known ``future_covariates``;
the number of output patches is the covariates' length in patches, so it is a
dynamic size of the program rather than a Python int.  Two programs cover every
horizon: ``main`` (2 to ``max_output_patches`` output patches) and
``one_patch`` (one output patch, the common short horizon).  ``torch.export``
cannot produce one graph for both: Chronos-2's code specialises a size of 1.

``PackagedChronos2Model`` stands in for ``Chronos2Model`` inside an unchanged
upstream ``Chronos2Pipeline``.  Before calling a program it does what the model
itself does first, so results are the model's own:

* a context longer than ``context_length`` keeps its last ``context_length``
  steps (the model truncates the same way);
* the context is left-padded with NaN to a whole number of input patches (the
  model's ``Patch`` pads the same way, and a NaN step is a masked step), so the
  program's context length is ``input_patch_size × context_patches``.

Shapes outside the exported ranges raise ``ValueError`` naming the range;
arguments the program does not take (``context_mask``, ``future_target`` ...)
raise ``NotImplementedError``.  Neither falls back silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from patchkit.errors import OutsideRange
from patchkit.verify.protocol import ExportProgram

#: largest batch the programs accept (Chronos2Pipeline.predict batches 256 series by default)
MAX_BATCH = 1024


class ForecastUnit(torch.nn.Module):
    """``Chronos2Model.forward(context, group_ids, future_covariates, num_output_patches)`` with the
    number of output patches read from the covariates' length."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.out_patch = int(model.chronos_config.output_patch_size)

    def forward(self, context: torch.Tensor, group_ids: torch.Tensor, future_covariates: torch.Tensor) -> torch.Tensor:
        return self.model(context=context, group_ids=group_ids, future_covariates=future_covariates,
                          num_output_patches=future_covariates.shape[1] // self.out_patch).quantile_preds


def _geometry(cfg: Any) -> tuple[int, int, int, int]:
    in_patch, stride = int(cfg.input_patch_size), int(cfg.input_patch_stride)
    if in_patch != stride:
        raise NotImplementedError(f"Chronos-2 export needs input_patch_size == input_patch_stride (got {in_patch}, "
                                  f"{stride})")
    return in_patch, int(cfg.output_patch_size), int(cfg.context_length) // in_patch, int(cfg.max_output_patches)


def programs(model: torch.nn.Module) -> list[ExportProgram]:
    from torch.export import Dim

    in_patch, out_patch, max_n, max_p = _geometry(model.chronos_config)
    unit = ForecastUnit(model).eval()
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)

    def example(batch: int, n: int, p: int) -> tuple[torch.Tensor, ...]:
        context = torch.randn(batch, n * in_patch, generator=gen).cumsum(-1)
        return (context.to(dev), torch.arange(batch, device=dev),
                torch.full((batch, p * out_patch), float("nan"), device=dev))

    batch = Dim("batch", min=1, max=MAX_BATCH)
    patches = Dim("context_patches", min=2, max=max_n)
    outputs = Dim("output_patches", min=2, max=max_p)
    ctx = {0: batch, 1: in_patch * patches}
    ranges = {"batch": [1, MAX_BATCH], "context_patches": [2, max_n]}
    return [
        ExportProgram("main", unit, example(3, 4, 2),
                      {"context": ctx, "group_ids": {0: batch}, "future_covariates": {0: batch, 1: out_patch * outputs}},
                      {**ranges, "output_patches": [2, max_p]}, {}),
        ExportProgram("one_patch", unit, example(3, 4, 1),
                      {"context": ctx, "group_ids": {0: batch}, "future_covariates": {0: batch}},
                      ranges, {"output_patches": 1}),
    ]


def export_config(model: torch.nn.Module) -> dict[str, Any]:
    return {"core_config": model.config.to_dict()}


@dataclass
class PackagedOutput:
    """What ``Chronos2Pipeline`` reads from the model's output."""

    quantile_preds: torch.Tensor


_NOT_EXPORTED = ("context_mask", "future_covariates_mask", "future_target", "future_target_mask")


class PackagedChronos2Model(torch.nn.Module):
    """``Chronos2Model`` for ``Chronos2Pipeline``, running the ahead-of-time package's programs."""

    def __init__(self, package: Any) -> None:
        super().__init__()
        from chronos.chronos2.config import Chronos2CoreConfig, Chronos2ForecastingConfig

        self.package = package
        self.config = Chronos2CoreConfig.from_dict(package.record["config"]["core_config"])
        self.chronos_config = Chronos2ForecastingConfig(**self.config.chronos_config)
        self.in_patch, self.out_patch, self.max_n, self.max_p = _geometry(self.chronos_config)
        self._device = torch.device(package.record["device"])

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def forward(self, context: torch.Tensor, context_mask: torch.Tensor | None = None,
                group_ids: torch.Tensor | None = None, future_covariates: torch.Tensor | None = None,
                future_covariates_mask: torch.Tensor | None = None, num_output_patches: int = 1,
                future_target: torch.Tensor | None = None, future_target_mask: torch.Tensor | None = None,
                output_attentions: bool = False) -> PackagedOutput:
        given = dict(context_mask=context_mask, future_covariates_mask=future_covariates_mask,
                     future_target=future_target, future_target_mask=future_target_mask)
        extra = [name for name in _NOT_EXPORTED if given[name] is not None] + (["output_attentions"]
                                                                             if output_attentions else [])
        if future_covariates is None:
            extra.append("future_covariates=None")
        if extra:
            raise NotImplementedError(
                f"the Chronos-2 package runs forward(context, group_ids, future_covariates, num_output_patches) as "
                f"Chronos2Pipeline calls it; {', '.join(extra)} is not part of it (use the eager model)")
        if context.ndim != 2:
            raise ValueError(f"context must be (batch, time), got shape {tuple(context.shape)}")
        batch, length = context.shape
        p = int(num_output_patches)
        if tuple(future_covariates.shape) != (batch, p * self.out_patch):
            raise ValueError(f"future_covariates must be (batch, num_output_patches x {self.out_patch}) = "
                             f"{(batch, p * self.out_patch)}, got {tuple(future_covariates.shape)}")
        if not 1 <= batch <= MAX_BATCH:
            raise OutsideRange(f"batch of {batch} series is outside the package's range 1..{MAX_BATCH}")
        if not 1 <= p <= self.max_p:
            raise OutsideRange(f"num_output_patches={p} is outside the package's range 1..{self.max_p}")
        if length > self.max_n * self.in_patch:  # the model keeps the last context_length steps
            context = context[:, -self.max_n * self.in_patch:]
            length = context.shape[1]
        pad = -length % self.in_patch
        if (length + pad) // self.in_patch < 2:
            raise OutsideRange(f"a context of {length} steps is outside the package's range: at least "
                             f"{self.in_patch + 1} steps (2..{self.max_n} input patches of {self.in_patch})")
        if pad:  # the model's Patch left-pads with NaN (a masked step) to a whole patch: do it here
            context = torch.nn.functional.pad(context, (pad, 0), value=float("nan"))
        if group_ids is None:  # as Chronos2Model.forward: every series on its own
            group_ids = torch.arange(batch, dtype=torch.long, device=context.device)
        program = self.package.program("one_patch" if p == 1 else "main")
        return PackagedOutput(program(context.contiguous(), group_ids, future_covariates.contiguous()))


def pipeline(package: Any):
    """An upstream ``Chronos2Pipeline`` whose model runs the package."""
    from chronos.chronos2.pipeline import Chronos2Pipeline

    return Chronos2Pipeline(model=PackagedChronos2Model(package))


def first_forecast(package: Any) -> tuple[Any, dict[str, float]]:
    """What a service does right after loading: 8 series of 500 steps, horizon 64, through ``predict``.

    Returns (a zero-argument call that makes the forecast and returns its tensor, setup timings)."""
    pipe = pipeline(package)
    gen = torch.Generator().manual_seed(0)
    series = [torch.randn(500, generator=gen).cumsum(0) for _ in range(8)]
    return lambda: pipe.predict(series, prediction_length=64)[0], {}
