"""Kronos (github.com/shiyu-coder/Kronos): the verify harness, the compile recipe and the synthetic workloads."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from patchkit.patchset import is_a
from patchkit.verify.harness import Harness, eager
from patchkit.verify.protocol import CallOutput, CompileFn, Series
from patchkit.verify.traffic import TrafficRanges

#: Tiny configuration used with random weights (same keyword names as upstream).
TOKENIZER_CONFIG: dict[str, Any] = dict(
    d_in=6, d_model=32, n_heads=2, ff_dim=64, n_enc_layers=2, n_dec_layers=2, ffn_dropout_p=0,
    attn_dropout_p=0, resid_dropout_p=0, s1_bits=4, s2_bits=4, beta=0.05, gamma0=1.0, gamma=1.1,
    zeta=0.05, group_size=4,
)
MODEL_CONFIG: dict[str, Any] = dict(
    s1_bits=4, s2_bits=4, n_layers=2, d_model=32, n_heads=2, ff_dim=64, ffn_dropout_p=0, attn_dropout_p=0,
    resid_dropout_p=0, token_dropout_p=0, learn_te=True,
)
#: Kronos-small (24,741,376 parameters) with Kronos-Tokenizer-base (3,958,042), as published
REAL_MODEL_CONFIG: dict[str, Any] = dict(
    s1_bits=10, s2_bits=10, n_layers=8, d_model=512, n_heads=8, ff_dim=1024, ffn_dropout_p=0.0, attn_dropout_p=0.0,
    resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True,
)
REAL_TOKENIZER_CONFIG: dict[str, Any] = dict(
    d_in=6, d_model=256, n_heads=4, ff_dim=512, n_enc_layers=4, n_dec_layers=4, ffn_dropout_p=0.0,
    attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=10, s2_bits=10, beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05,
    group_size=4,
)
REAL_PARAMETERS = 24_741_376 + 3_958_042

COLUMNS = ("open", "high", "low", "close", "volume", "amount")


def ohlcv_from_close(close: np.ndarray, seed: int) -> np.ndarray:
    """(n, 6) bars around a close path: open = previous close, wicks scaled to the step size.

    NaNs in ``close`` stay NaN in the price columns; a constant path stays
    constant (no wicks), so the zero-variance case is kept.
    """
    rng = np.random.default_rng(seed)
    n = len(close)
    steps = np.diff(close)
    scale = float(np.nanstd(steps)) if np.isfinite(steps).any() else 0.0
    open_ = np.concatenate([close[:1], close[:-1]])
    wicks = np.abs(rng.normal(0.0, 0.5, (2, n))) * scale
    high = np.maximum(open_, close) + wicks[0]
    low = np.minimum(open_, close) - wicks[1]
    volume = rng.lognormal(8.0, 0.5, n)
    amount = volume * (open_ + high + low + close) / 4.0
    return np.stack([open_, high, low, close, volume, amount], axis=1)


def synthetic_ohlcv_series(context_length: int, horizon: int, seed: int = 0) -> list[Series]:
    """patchkit's synthetic stress set, each path turned into OHLCV bars."""
    from patchkit.verify.datasets import synthetic_series

    out = []
    for i, s in enumerate(synthetic_series(context_length, horizon, seed)):
        bars = ohlcv_from_close(np.concatenate([s.context, s.truth]), seed + i)
        out.append(Series(f"ohlcv_{s.name}", bars[:context_length], bars[context_length:], "synthetic"))
    return out


def real_ohlcv_series(context_length: int, horizon: int) -> list[Series]:
    """Daily S&P 500 and NASDAQ Composite bars (1999-2018) shipped in the ``arch`` wheel (no network)."""
    from patchkit.verify.datasets import DataUnavailable

    try:
        from arch.data import nasdaq, sp500
    except ImportError as err:
        raise DataUnavailable("real OHLCV series need the arch package (pip install arch)") from err
    n = context_length + horizon
    found = []
    for name, loader, origin in (
        ("sp500_daily", sp500, "arch.data.sp500 (S&P 500 daily bars, Yahoo Finance)"),
        ("nasdaq_daily", nasdaq, "arch.data.nasdaq (NASDAQ Composite daily bars, Yahoo Finance)"),
    ):
        frame = loader.load()
        ohlc = frame[["Open", "High", "Low", "Close"]].to_numpy(dtype=np.float64)
        volume = frame["Volume"].to_numpy(dtype=np.float64)
        bars = np.column_stack([ohlc, volume, volume * ohlc.mean(axis=1)])[-n:]
        found.append(Series(name, bars[:-horizon], bars[-horizon:], origin))
    return found


#: compiled unit names of the decode cache's static steps (``_PatchkitDecodeCache._static_s1/_s2``)
STEP_UNITS = {"_static_s1": "step_s1", "_static_s2": "step_s2"}


def _compile_cached_steps(model, compile_fn: CompileFn, named: bool) -> None:
    """Let the patched tree's decode cache compile its growing-window steps with ``compile_fn``, as a user does
    with ``model.patchkit_step_compiler = torch.compile``; ``named``: pass each its unit name, as the callers
    that name decode_s1/decode_s2 do.  Eager runs keep the cache's eager path; an upstream tree has no cache and
    ignores the attribute."""
    if compile_fn is eager:
        return
    model.patchkit_step_compiler = (
        (lambda fn: compile_fn(fn, name=STEP_UNITS[fn.__name__])) if named else compile_fn)


def compile_recipe(obj, compile_fn: CompileFn):
    """``runtime.compile_model`` for Kronos, in place on a ``Kronos`` or a ``KronosPredictor``'s model: the decode
    cache's growing-window steps (``step_s1``/``step_s2``, one static-shape graph each), and ``decode_s1`` /
    ``decode_s2``, which serve the window once it rolls past ``max_context``.  Compiling only ``decode_s1`` /
    ``decode_s2``, as upstream users do, leaves the growing window eager (the cache warns once)."""
    model = obj.model if is_a(obj, "KronosPredictor") else obj
    model.decode_s1 = compile_fn(model.decode_s1, name="decode_s1")
    model.decode_s2 = compile_fn(model.decode_s2, name="decode_s2")
    _compile_cached_steps(model, compile_fn, named=True)
    return obj


class KronosHarness(Harness):
    """Tiny seeded Kronos (or Hugging Face weights) driven through ``auto_regressive_inference``.

    Compilation is hooked in without touching upstream's API: ``decode_s1`` and
    ``decode_s2`` are replaced on the model *instance* by ``compile_fn`` of the
    bound methods, which is what ``auto_regressive_inference`` then calls.
    """

    model = "kronos"
    sizes = ("tiny", "real")
    #: forecast geometry: the window grows 112 -> 128 over the first 16 decode steps (one new
    #: length per step: the regime that recompiles upstream, as Kronos-small's 512 window does
    #: for shorter look-backs), then rolls at max_context for the last 16 (the saturated path)
    context_length = 112
    horizon = 32
    max_context = 128
    #: workload geometry: >= 16 decode steps over two context lengths, the second saturating max_context
    workload_contexts = (24, 56)
    workload_max_context = 64
    workload_steps = 16
    workload_samples = 2

    # -- building ------------------------------------------------------------
    def _build(self, compile_fn: CompileFn):
        import torch
        from model.kronos import Kronos, KronosTokenizer  # the vendored tree under test

        torch.manual_seed(self.seed)
        if self.weights:
            model_dir, _, tok_dir = self.weights.partition(",")
            if not tok_dir:
                raise ValueError("kronos --weights takes MODEL_DIR,TOKENIZER_DIR (two local checkpoint directories)")
            tokenizer = KronosTokenizer.from_pretrained(tok_dir)
            model = Kronos.from_pretrained(model_dir)
        elif self.size == "real":
            tokenizer = KronosTokenizer(**REAL_TOKENIZER_CONFIG)
            model = Kronos(**REAL_MODEL_CONFIG)
        else:
            tokenizer = KronosTokenizer(**TOKENIZER_CONFIG)
            model = Kronos(**MODEL_CONFIG)
        tokenizer = tokenizer.to(self.device).eval()
        model = model.to(self.device).eval()
        model.decode_s1 = compile_fn(model.decode_s1)
        model.decode_s2 = compile_fn(model.decode_s2)
        _compile_cached_steps(model, compile_fn, named=False)
        return tokenizer, model

    def parameter_count(self) -> int:
        tokenizer, model = self._build(eager)
        return sum(p.numel() for m in (model, tokenizer) for p in m.parameters())

    # -- traffic: KronosPredictor.predict / predict_batch with top-p sampling -----------------------
    def traffic_ranges(self) -> TrafficRanges:
        if self.size == "real":
            # Kronos-small's 512-token window; histories past it roll the window.  On a CPU the horizons stay
            # short (upstream eager decodes ~0.2 s a step at this size) and a token budget caps each call
            return TrafficRanges(batch=(1, 32), history=(64, 512), horizon=(1, 48), max_context=512,
                                 single_pass_horizon=24, samples=(1, 5), token_budget=4096)
        return TrafficRanges(batch=(1, 4), history=(24, 80), horizon=(1, 20), max_context=64,
                             single_pass_horizon=10, samples=(1, 5), token_budget=512)

    def serve(self, compile_fn: CompileFn):
        from model.kronos import KronosPredictor

        tokenizer, model = self._build(eager)
        compile_recipe(model, compile_fn)
        return self._serve_predictor(
            KronosPredictor(model, tokenizer, device=self.device, max_context=self.traffic_ranges().max_context))

    # -- ahead of time: the decode cache's growing-window steps (patches/kronos/aot.py) ---------------
    @functools.cached_property
    def _export_model(self):
        """The eager model the export traces and fingerprints: built once for both."""
        return self._build(eager)[1]

    def export_programs(self):
        from .aot import programs

        return programs(self._export_model, self.traffic_ranges().max_context)

    def export_config(self) -> dict[str, Any]:
        from .aot import export_config

        return export_config(self._export_model, self.traffic_ranges().max_context)

    def serve_aot(self, package):
        tokenizer, model = self._build(eager)
        return self._serve_predictor(package.entry_point(model, tokenizer, device=self.device))

    def _serve_predictor(self, predictor):
        import pandas as pd
        import torch

        def handle(call, data_seed: int) -> CallOutput:
            rng = np.random.default_rng(data_seed)
            frames, x_times, y_times = [], [], []
            stamps = pd.Series(pd.date_range("2024-01-02 09:30", periods=call.history + call.horizon, freq="5min"))
            for i in range(call.batch):
                close = 100.0 + np.cumsum(rng.normal(0.0, 1.0, call.history))
                frames.append(pd.DataFrame(ohlcv_from_close(close, data_seed + i), columns=list(COLUMNS)))
                x_times.append(stamps[: call.history].reset_index(drop=True))
                y_times.append(stamps[call.history :].reset_index(drop=True))
            kwargs = dict(T=1.0, top_k=0, top_p=0.9, sample_count=max(1, call.samples), verbose=False)
            with torch.no_grad():
                if call.batch == 1:
                    preds = [predictor.predict(frames[0], x_times[0], y_times[0], call.horizon, **kwargs)]
                else:
                    preds = predictor.predict_batch(frames, x_times, y_times, call.horizon, **kwargs)
            values = np.stack([p[list(COLUMNS)].to_numpy(dtype=np.float64) for p in preds])
            # predict returns the mean over sample_count top-p paths: a random draw, so it is reported as one
            # sample (axis 0): identical to upstream under the same seed in eager, compared on its values
            # within sample_rtol once compiled (logit drift can flip a drawn token)
            return CallOutput(None, values[None], 0)

        return handle

    def to_dtype(self, dtype: str) -> None:
        if dtype == "bfloat16":
            # casting the weights fails on the float32 inputs the predictor builds, and under torch.autocast the
            # predictor's own `z.cpu().numpy()` fails on the bf16 decoder output: numpy has no bfloat16
            raise NotImplementedError("kronos: KronosPredictor has no bfloat16 path (under torch.autocast its "
                                      "`z.cpu().numpy()` gets a bfloat16 tensor, which numpy cannot hold)")
        super().to_dtype(dtype)

    def describe(self) -> dict[str, Any]:
        return {
            "weights": self.weights or f"random, torch.manual_seed({self.seed})",
            "size": self.size,
            "tokenizer_config": None if self.weights else (REAL_TOKENIZER_CONFIG if self.size == "real" else TOKENIZER_CONFIG),
            "model_config": None if self.weights else (REAL_MODEL_CONFIG if self.size == "real" else MODEL_CONFIG),
            "compiled": "Kronos.decode_s1 and Kronos.decode_s2 (replaced on the instance)",
            "workload": (
                f"auto_regressive_inference, contexts {list(self.workload_contexts)}, "
                f"{self.workload_steps} decode steps each, max_context {self.workload_max_context}, "
                f"sample_count {self.workload_samples}, top_k=1"
            ),
            "forecast": (
                f"KronosPredictor(max_context={self.max_context}).predict_batch (predict per series when "
                f"absent), top_k=1, T=1.0, sample_count=1, seed {self.seed}; NaN bars forward/back-filled"
            ),
        }

    # -- verify entry points ---------------------------------------------------
    def workload(self, compile_fn: CompileFn) -> None:
        import torch
        from model.kronos import auto_regressive_inference

        tokenizer, model = self._build(compile_fn)
        gen = torch.Generator().manual_seed(self.seed + 1)
        steps = self.workload_steps
        for length in self.workload_contexts:
            x = torch.randn(1, length, 6, generator=gen).to(self.device)
            minutes = torch.arange(length + steps)
            stamp = torch.stack(
                [minutes % 60, (minutes // 60) % 24, (minutes // 1440) % 7, 1 + (minutes // 1440) % 28,
                 torch.full_like(minutes, 6)],
                dim=-1,
            ).float()[None].to(self.device)
            torch.manual_seed(self.seed)
            auto_regressive_inference(
                tokenizer, model, x, stamp[:, :length], stamp[:, length:], self.workload_max_context, steps,
                top_k=1, sample_count=self.workload_samples,
            )

    def forecast(self, series: list[Series], compile_fn: CompileFn) -> list[np.ndarray]:
        import pandas as pd
        import torch
        from model.kronos import KronosPredictor

        tokenizer, model = self._build(compile_fn)
        predictor = KronosPredictor(model, tokenizer, device=self.device, max_context=self.max_context)
        frames, x_times, y_times = [], [], []
        for s in series:
            ctx = np.asarray(s.context, dtype=np.float64).reshape(len(s.context), -1)
            if ctx.shape[1] != len(COLUMNS):
                raise ValueError(f"series {s.name}: Kronos needs {len(COLUMNS)} OHLCV columns, got {ctx.shape[1]}")
            # KronosPredictor rejects NaN bars; carry the last bar forward (first one back) instead.
            frame = pd.DataFrame(ctx, columns=list(COLUMNS)).ffill().bfill().fillna(0.0)
            stamps = pd.date_range("2024-01-02 09:30", periods=len(ctx) + len(s.truth), freq="5min")
            frames.append(frame)
            x_times.append(pd.Series(stamps[: len(ctx)]))
            y_times.append(pd.Series(stamps[len(ctx) :]))
        kwargs = dict(T=1.0, top_k=1, top_p=1.0, sample_count=1, verbose=False)
        out: list[np.ndarray] = [np.empty(0)] * len(series)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(series):
            groups.setdefault((len(s.context), len(s.truth)), []).append(i)
        for (_, horizon), idx in groups.items():
            torch.manual_seed(self.seed)
            if hasattr(predictor, "predict_batch"):
                preds = predictor.predict_batch(
                    [frames[i] for i in idx], [x_times[i] for i in idx], [y_times[i] for i in idx], horizon, **kwargs
                )
            else:
                preds = [predictor.predict(frames[i], x_times[i], y_times[i], horizon, **kwargs) for i in idx]
            for i, pred in zip(idx, preds):
                values = pred[list(COLUMNS)].to_numpy(dtype=np.float64)
                out[i] = values.reshape(np.shape(series[i].truth))
        return out

    def series(self) -> list[Series]:
        return synthetic_ohlcv_series(self.context_length, self.horizon, self.seed) + real_ohlcv_series(
            self.context_length, self.horizon
        )
