"""Chronos-2 (package ``chronos-forecasting``): patch set and verify harness.

Hazard: ``Chronos2Model._prepare_patched_future`` validates future covariates
with ``if torch.isnan(future_covariates).any(): raise ValueError(...)``.  The
branch needs the tensor's value on the host, so Dynamo breaks the graph there,
and ``Chronos2Pipeline`` always passes (NaN-filled) future covariates, so every
pipeline forward pays for it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from patchkit.patchset import PatchSet, PipSource, Step, UpstreamTests
from patchkit.verify.harness import CompileFn, Harness, Series

PATCHSET = PatchSet(
    model="chronos2",
    title="Amazon Chronos-2 (chronos-forecasting)",
    source=PipSource(
        package="chronos-forecasting",
        dist="sdist",  # the sdist carries upstream's test/ folder and its dummy checkpoints
        include=(("src/chronos/", "chronos/"), ("test/", "test/")),
    ),
    pin="2.3.2",
    known_versions=("2.0.0", "2.0.1", "2.1.0", "2.2.0", "2.2.1", "2.2.2", "2.3.0", "2.3.1", "2.3.2"),
    steps=(
        Step(
            codemod="isnan-guard",
            files=("chronos/chronos2/model.py",),
            options={"mode": "gate", "functions": ["_prepare_patched_future"]},
            why="`if torch.isnan(future_covariates).any(): raise ValueError` in _prepare_patched_future "
            "breaks the graph on every forward with future covariates",
        ),
    ),
    harness="patchkit.patches.chronos2:Chronos2Harness",
    provides=("chronos",),
    upstream_tests=UpstreamTests(
        paths=("test/test_chronos2.py", "test/test_chronos_bolt.py", "test/test_utils.py"),
        deselect={
            "loads_from_hf": "downloads a checkpoint from the Hugging Face Hub (no network)",
            "loads_from_huggingface": "downloads a checkpoint from the Hugging Face Hub (no network)",
            "loads_from_s3": "downloads a checkpoint from S3 (no network)",
            "dummy_fev_task": "fev loads its task data set from the Hugging Face Hub (no network)",
        },
    ),
    mae_tolerance=1e-3,
)


class Chronos2Harness(Harness):
    model = "chronos2"
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
