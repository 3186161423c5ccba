"""A fixture model for the traffic machinery: our own tiny forecaster, an upstream-shaped tree and patched variants.

``write_tree(path, variant)`` lays down a package ``fakeforecast`` in one of these shapes:

* ``upstream``: reads the input's scale with ``.item()`` (a graph break on every call);
* ``patched``: the same arithmetic on a 0-d tensor (no break; identical results), and ``prepare`` marks the
  batch and length dims dynamic before the call (one graph for every shape);
* ``bad``: patched, but it counts calls in a Python int on the module (a guard that fails on every call, so it
  recompiles until the recompile limit) and nudges its output (eager drift against upstream).
* ``flaky``: patched, but compiled code counts its calls in a buffer (no guard, no recompile) and from the 17th
  compiled call on moves one element of the output by 3e-5 of the output's scale: clean in the first compiled
  pass (8 calls) and the steady pass, wrong in the repeats, and too small for relative L2 on most calls.

``PATCHSET`` is registered for the verify subprocesses through ``PATCHKIT_EXTRA_PATCHSETS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from patchkit.patchset import PatchSet, PipSource, TrafficSpec
from patchkit.verify.harness import CallOutput, Harness
from patchkit.verify.traffic import TrafficRanges

_HEAD = '''import torch


def prepare(x):
    return x


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(1, 1)
        self.calls = 0
        self.register_buffer("tick", torch.zeros((), dtype=torch.int64))

    def forward(self, x, horizon: int):
        level = torch.nan_to_num(x, nan=0.0).mean(-1, keepdim=True)
'''
_BODIES = {
    "upstream": '''        scale = x.nan_to_num(0.0).abs().amax().item()
        steps = torch.arange(horizon, dtype=x.dtype) * 0.01 * scale
        return self.proj(level).expand(-1, horizon) + steps
''',
    "patched": '''        scale = x.nan_to_num(0.0).abs().amax()
        steps = torch.arange(horizon, dtype=x.dtype) * 0.01 * scale
        return self.proj(level).expand(-1, horizon) + steps
''',
    "bad": '''        self.calls += 1
        scale = x.nan_to_num(0.0).abs().amax()
        steps = torch.arange(horizon, dtype=x.dtype) * 0.01 * scale
        return self.proj(level).expand(-1, horizon) + steps * (1.0 + 1e-3 * (self.calls > 0))
''',
    "flaky": '''        scale = x.nan_to_num(0.0).abs().amax()
        steps = torch.arange(horizon, dtype=x.dtype) * 0.01 * scale
        out = self.proj(level).expand(-1, horizon) + steps
        if torch.compiler.is_compiling():
            self.tick.add_(1)
            bump = torch.zeros_like(out)
            bump[0, 0] = 3e-5 * out.abs().mean()
            out = out + bump * (self.tick > 16)
        return out
''',
}


_PREPARE = '''

def prepare(x):
    torch._dynamo.decorators.mark_unbacked(x, 0)
    torch._dynamo.mark_dynamic(x, 1)
    return x
'''


def write_tree(path: Path, variant: str) -> Path:
    pkg = Path(path) / "fakeforecast"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(_HEAD + _BODIES[variant] + ("" if variant == "upstream" else _PREPARE))
    return Path(path)


class FakeHarness(Harness):
    model = "trafficfix"
    sizes = ("tiny",)

    def __init__(self, tree: Path, weights: str | None = None, seed: int = 0, device: str = "cpu",
                 size: str = "tiny") -> None:
        super().__init__(tree, weights, seed, device, size)
        import torch
        import fakeforecast

        torch.manual_seed(seed)
        self.pkg = fakeforecast
        self.net = fakeforecast.Net().eval()

    def describe(self) -> dict[str, Any]:
        return {"weights": "random", "workload": "fakeforecast.Net through a fake service"}

    def workload(self, compile_fn) -> None:  # pragma: no cover - the traffic tests do not use it
        raise NotImplementedError

    def forecast(self, series, compile_fn):  # pragma: no cover
        raise NotImplementedError

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def traffic_ranges(self) -> TrafficRanges:
        return TrafficRanges(batch=(1, 4), history=(8, 40), horizon=(1, 12), max_context=32, single_pass_horizon=8,
                             patch=4, samples=(0, 3))

    def serve(self, compile_fn):
        import torch

        fn = compile_fn(self.net, name="net")

        def handle(call, data_seed: int) -> CallOutput:
            gen = torch.Generator().manual_seed(data_seed)
            x = torch.randn(call.batch, call.history, generator=gen).cumsum(-1)
            x[:, : call.history // 5] = float("nan")  # a gap at the start of every series
            point = fn(self.pkg.prepare(x[:, -32:].clone()), call.horizon)
            samples = None
            if call.samples:
                samples = (point[None] + torch.randn(call.samples, *point.shape)).numpy()  # the global RNG
            return CallOutput(point.numpy().astype(np.float64), samples, 0)

        return handle


PATCHSET = PatchSet(
    model="trafficfix",
    title="traffic fixture model",
    source=PipSource(package="fakeforecast", dist="wheel", include=(("fakeforecast/", "fakeforecast/"),)),
    pin="0",
    known_versions=("0",),
    steps=(),
    harness="tests.traffic_fixture:FakeHarness",
    provides=("fakeforecast",),
    hazards=("graph_breaks",),
    traffic=TrafficSpec(graph_budget={"net": 2}, phases={"net": ("forecast",)}, sample_rtol=0.5,
                        sample_note="3 Gaussian draws per point: only a loose distribution check is meaningful"),
)
