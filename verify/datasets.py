"""Evaluation series for verify: a synthetic stress set and real public data.

Every series is cut into a context and a held-back truth of ``horizon`` steps.
The synthetic set is seeded and covers the regimes that break numerics:
random walks, high volatility, tiny (1e-4) and huge (1e6) magnitudes, price
jumps, values crossing zero, outliers, constants, trends and NaN gaps.  The real
set comes from data files that statsmodels ships in its wheel (no network).
"""

from __future__ import annotations

import numpy as np

from .protocol import Series


class DataUnavailable(RuntimeError):
    """A real data set could not be loaded (its package is not installed)."""


def synthetic_series(context_length: int, horizon: int, seed: int = 0) -> list[Series]:
    rng = np.random.default_rng(seed)
    n = context_length + horizon
    t = np.arange(n, dtype=np.float64)
    season = np.sin(2 * np.pi * t / 24.0)
    out: dict[str, np.ndarray] = {}
    out["random_walk"] = 100.0 + np.cumsum(rng.normal(0, 1, n))
    vol = np.exp(np.cumsum(rng.normal(0, 0.15, n)) * 0.3)
    out["high_volatility"] = 50.0 + np.cumsum(rng.normal(0, 5, n) * vol)
    out["tiny_1e-4"] = 1e-4 * (1.5 + season + 0.1 * rng.normal(0, 1, n))
    out["huge_1e6"] = 1e6 * (3.0 + season + 0.05 * rng.normal(0, 1, n))
    jumps = np.where(rng.random(n) < 0.02, rng.normal(0, 25, n), 0.0)
    out["price_jumps"] = 200.0 + np.cumsum(rng.normal(0, 0.5, n) + jumps)
    out["near_zero"] = 1e-3 * season + 1e-4 * rng.normal(0, 1, n)
    spikes = np.where(rng.random(n) < 0.03, rng.choice([-1.0, 1.0], n) * 40.0, 0.0)
    out["outliers"] = 10.0 * season + rng.normal(0, 0.5, n) + spikes
    out["constant"] = np.full(n, 7.0)
    out["linear_trend"] = 0.5 * t + rng.normal(0, 0.2, n)
    gaps = 20.0 + 5.0 * season + rng.normal(0, 0.3, n)
    for start in rng.integers(0, context_length - 20, 4):
        gaps[start : start + rng.integers(3, 15)] = np.nan
    out["nan_gaps"] = gaps
    return [
        Series(name, v[:context_length].copy(), v[context_length:].copy(), "synthetic")
        for name, v in out.items()
    ]


def real_series(context_length: int, horizon: int) -> list[Series]:
    """CO2 at Mauna Loa (weekly) and yearly sunspot numbers, from statsmodels' bundled data."""
    try:
        from statsmodels.datasets import co2, sunspots
    except ImportError as err:  # pragma: no cover - exercised only without the data extra
        raise DataUnavailable(
            "real evaluation series need statsmodels (pip install 'patchkit[data]')"
        ) from err
    n = context_length + horizon
    found: list[Series] = []
    co2_values = co2.load_pandas().data["co2"].to_numpy(dtype=np.float64)
    spots = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64)
    for name, values, origin in (
        ("co2_weekly", co2_values, "statsmodels.datasets.co2 (Mauna Loa, weekly)"),
        ("sunspots_yearly", spots, "statsmodels.datasets.sunspots (yearly)"),
    ):
        tail = values[-n:]
        if len(tail) < n:  # shorter than the window: take what there is, keep the horizon
            tail = values
        found.append(Series(name, tail[:-horizon].copy(), tail[-horizon:].copy(), origin))
    return found


def standard_series(context_length: int, horizon: int, seed: int = 0) -> list[Series]:
    return synthetic_series(context_length, horizon, seed) + real_series(context_length, horizon)
