"""One small seeded forecast through a model's public API; prints JSON (where the code came from, the forecast).

    python installed_forecast.py MODEL [--tree TREE] [--data DIR]

Without ``--tree`` the model is imported as installed (a patchkit wheel); with it, from a
vendored tree put first on ``sys.path``, so a test can compare the two.  ``--data``: chronos2's
checkpoint directory (upstream's test checkpoint in the vendored tree).  Run from any folder.
"""

from __future__ import annotations

import argparse
import json
import sys

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--tree")
ap.add_argument("--data")
args = ap.parse_args()
if args.tree:
    sys.path.insert(0, args.tree)

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)

if args.model == "toto":
    from toto.data.util.dataset import MaskedTimeseries
    from toto.inference import forecaster as where
    from toto.inference.forecaster import TotoForecaster
    from toto.model.toto import Toto

    toto = Toto(patch_size=8, stride=8, embed_dim=32, num_layers=4, num_heads=2, mlp_hidden_dim=64, dropout=0.0,
                spacewise_every_n_layers=2, spacewise_first=False,
                scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
                output_distribution_classes=["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
                output_distribution_kwargs={"k_components": 4}, use_memory_efficient_attention=False)
    values = torch.randn(2, 2, 48, generator=gen).cumsum(-1)
    inputs = MaskedTimeseries(series=values, padding_mask=torch.ones_like(values, dtype=torch.bool),
                              id_mask=torch.zeros(2, 2, 48, dtype=torch.int),
                              timestamp_seconds=torch.zeros(2, 2, 48, dtype=torch.int),
                              time_interval_seconds=torch.full((2, 2), 60, dtype=torch.int))
    with torch.no_grad():
        out = TotoForecaster(toto.model.eval()).forecast(inputs, prediction_length=24, use_kv_cache=True)
    forecast = out.mean.numpy()
elif args.model == "chronos2":
    from chronos import Chronos2Pipeline
    from chronos.chronos2 import pipeline as where

    pipe = Chronos2Pipeline.from_pretrained(args.data)
    series = [torch.randn(n, generator=gen).cumsum(0) + 50 for n in (40, 100)]
    forecast = np.stack([p.numpy() for p in pipe.predict(series, prediction_length=20)])
else:
    import pandas as pd

    try:
        from kronos import Kronos, KronosPredictor, KronosTokenizer
        from kronos import kronos as where
    except ImportError:  # a vendored tree: upstream's bare `model` package
        from model import Kronos, KronosPredictor, KronosTokenizer
        from model import kronos as where

    tokenizer = KronosTokenizer(d_in=6, d_model=32, n_heads=2, ff_dim=64, n_enc_layers=2, n_dec_layers=2,
                                ffn_dropout_p=0, attn_dropout_p=0, resid_dropout_p=0, s1_bits=4, s2_bits=4, beta=0.05,
                                gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4).eval()
    model = Kronos(s1_bits=4, s2_bits=4, n_layers=2, d_model=32, n_heads=2, ff_dim=64, ffn_dropout_p=0,
                   attn_dropout_p=0, resid_dropout_p=0, token_dropout_p=0, learn_te=True).eval()
    close = 100 + np.cumsum(np.random.default_rng(0).normal(size=40))
    df = pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close,
                       "volume": np.full(40, 1000.0), "amount": close * 1000})
    stamps = pd.Series(pd.date_range("2024-01-02 09:30", periods=48, freq="5min"))
    pred = KronosPredictor(model, tokenizer, device="cpu", max_context=32).predict(
        df, stamps[:40], stamps[40:], pred_len=8, T=1.0, top_k=1, sample_count=1, verbose=False)
    forecast = pred.to_numpy(dtype=np.float64)

print(json.dumps({"file": where.__file__, "forecast": np.asarray(forecast, dtype=np.float64).tolist()}))
