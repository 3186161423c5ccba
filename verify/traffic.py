"""Traffic profiles: a seeded stream of calls shaped like a forecasting service's.

A profile is a list of :class:`Call` drawn from a model's :class:`TrafficRanges`:
batch sizes, history lengths (many not multiples of the patch size, some past the
model's context so the upstream truncates), horizons from one step to past the
model's single-pass maximum, variates and sampled paths.  Verify runs the same
profile eagerly and compiled, then again with new data under
``torch.compiler.set_stance("fail_on_recompile")``; every call gets the same
data seed in every variant, so outputs can be compared call by call.

Fidelity metrics live here too: relative L2 error with NaN positions compared
exactly, and a distribution comparison for sampled paths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Call:
    """One request: ``batch`` series of ``history`` steps, forecast ``horizon`` steps ahead."""

    index: int
    batch: int
    history: int
    horizon: int
    variates: int = 1
    #: sampled paths per series (Toto ``num_samples``, Kronos ``sample_count``); 0 = deterministic path only
    samples: int = 0
    #: model-specific switches (for example ``{"cross_learning": True}``)
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in sorted(self.options.items()))
        return (f"#{self.index} b{self.batch} h{self.history} H{self.horizon}"
                f"{f' v{self.variates}' if self.variates != 1 else ''}{f' s{self.samples}' if self.samples else ''}{extra}")


@dataclass(frozen=True)
class TrafficRanges:
    """Where a model's calls are drawn from (inclusive bounds)."""

    batch: tuple[int, int]
    history: tuple[int, int]
    horizon: tuple[int, int]
    #: the model's context limit: about one call in six gets a history past it (the upstream truncates)
    max_context: int
    #: the horizon one forward pass covers; some calls go past it (autoregressive unrolling)
    single_pass_horizon: int
    variates: tuple[int, int] = (1, 1)
    #: sampled paths; (0, 0) means the model has no sampled path in this profile
    samples: tuple[int, int] = (0, 0)
    #: patch size: histories are mostly not multiples of it
    patch: int = 1
    #: cap on batch * history * variates * max(samples, 1), so a real-size profile fits a CPU run;
    #: a call over it gets a smaller batch (stated in the report)
    token_budget: int | None = None
    #: model-specific options: each call picks one value per key, in turn
    options: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def profile(ranges: TrafficRanges, n_calls: int = 24, seed: int = 0) -> list[Call]:
    """A seeded, reproducible list of ``n_calls`` calls covering ``ranges``.

    The first calls pin the corners (smallest and largest batch, shortest history,
    one past the context limit, a one-step and a past-single-pass horizon) so
    even a short profile exercises every regime; the rest are random draws.
    """
    if n_calls < 1:
        raise ValueError("a traffic profile needs at least one call")
    rng = np.random.default_rng(seed)
    lo_h, hi_h = ranges.history
    over = min(ranges.max_context * 5 // 4 + 1, max(hi_h, ranges.max_context) + 4 * ranges.patch + 3)

    def history() -> int:
        r = rng.random()
        if r < 1 / 6 and over > ranges.max_context:
            return int(rng.integers(ranges.max_context + 1, over + 1))
        # log-uniform: services see many short and some long histories
        value = int(np.exp(rng.uniform(np.log(lo_h), np.log(min(hi_h, ranges.max_context)))))
        if ranges.patch > 1 and value % ranges.patch == 0 and rng.random() < 0.8:
            value += int(rng.integers(1, ranges.patch))
        return max(lo_h, min(value, min(hi_h, ranges.max_context)))

    def horizon() -> int:
        lo, hi = ranges.horizon
        r = rng.random()
        if r < 0.25 and hi > ranges.single_pass_horizon:
            return int(rng.integers(ranges.single_pass_horizon + 1, hi + 1))
        return int(rng.integers(lo, min(hi, ranges.single_pass_horizon) + 1))

    def draw(lo_hi: tuple[int, int]) -> int:
        return int(rng.integers(lo_hi[0], lo_hi[1] + 1))

    corners: list[dict[str, int]] = [
        dict(batch=ranges.batch[0], history=lo_h, horizon=ranges.horizon[0]),
        dict(batch=ranges.batch[1], history=min(hi_h, ranges.max_context) - 1, horizon=ranges.single_pass_horizon),
        dict(batch=max(ranges.batch[0], 2), history=max(over, ranges.max_context + 1), horizon=ranges.horizon[1]),
    ]
    calls: list[Call] = []
    option_keys = sorted(ranges.options)
    for i in range(n_calls):
        spec = corners[i] if i < len(corners) else dict(batch=draw(ranges.batch), history=history(), horizon=horizon())
        variates = draw(ranges.variates)
        samples = draw(ranges.samples) if ranges.samples[1] else 0
        batch = spec["batch"]
        if ranges.token_budget:
            per_series = spec["history"] * variates * max(samples, 1)
            batch = max(1, min(batch, ranges.token_budget // max(per_series, 1)))
        opts = {k: ranges.options[k][i % len(ranges.options[k])] for k in option_keys}
        calls.append(Call(i, batch, spec["history"], spec["horizon"], variates, samples, opts))
    return calls


# -- fidelity -------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """How far ``got`` is from ``want``: relative L2 over finite entries, the worst single element against the
    output's scale, and NaN placement."""

    rel_l2: float
    max_abs: float
    nan_mismatch: int
    shape_ok: bool
    #: ``max |got - want| / mean |want|`` over finite entries: an error confined to a few series or steps, which
    #: relative L2 dilutes by the size of the output, shows here at full size
    max_scaled: float = 0.0

    def within(self, tol: float) -> bool:
        return self.shape_ok and self.nan_mismatch == 0 and self.rel_l2 <= tol

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare(got: np.ndarray, want: np.ndarray) -> Comparison:
    """Relative L2 error ``||got - want|| / ||want||`` and the per-element ``max |got - want| / mean |want|`` over
    positions finite in both.

    NaN (or inf) in one array where the other is finite counts as a mismatch:
    a NaN against a number is a failure, never averaged away.
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return Comparison(float("inf"), float("inf"), 0, False, float("inf"))
    fin_g, fin_w = np.isfinite(got), np.isfinite(want)
    mismatch = int(np.count_nonzero(fin_g != fin_w))
    both = fin_g & fin_w
    # equal non-finite values (nan vs nan, +inf vs +inf) are a match; nan vs inf is not
    odd = ~fin_g & ~fin_w
    if odd.any():
        g, w = got[odd], want[odd]
        mismatch += int(np.count_nonzero(~((np.isnan(g) & np.isnan(w)) | (g == w))))
    if not both.any():
        return Comparison(0.0, 0.0, mismatch, True)
    diff = got[both] - want[both]
    denom = float(np.linalg.norm(want[both]))
    num = float(np.linalg.norm(diff))
    rel = num / denom if denom > 0 else (0.0 if num == 0 else float("inf"))
    worst = float(np.max(np.abs(diff)))
    scale = float(np.mean(np.abs(want[both])))
    scaled = worst / scale if scale > 0 else (0.0 if worst == 0 else float("inf"))
    return Comparison(rel, worst, mismatch, True, scaled)


def compare_distribution(got: np.ndarray, want: np.ndarray, axis: int) -> Comparison:
    """Compare sampled paths on their distribution: median and 10%/90% quantiles over ``axis``.

    Used for compiled sampling, whose random stream differs from eager's.
    The result is the relative L2 error of the stacked quantiles.
    """
    qs = (0.1, 0.5, 0.9)
    g = np.nanquantile(np.asarray(got, np.float64), qs, axis=axis)
    w = np.nanquantile(np.asarray(want, np.float64), qs, axis=axis)
    return compare(g, w)


def percentiles(times: list[float]) -> dict[str, float]:
    if not times:
        return {"p50_s": float("nan"), "p95_s": float("nan"), "total_s": 0.0, "calls": 0}
    arr = np.asarray(times, dtype=np.float64)
    return {"p50_s": float(np.percentile(arr, 50)), "p95_s": float(np.percentile(arr, 95)),
            "total_s": float(arr.sum()), "calls": int(arr.size)}
