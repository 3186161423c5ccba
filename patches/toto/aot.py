"""Toto ahead of time: the backbone's prefill and decode-step programs, and the backbone the runtime puts in its place.

``TotoForecaster`` drives the backbone with a KV cache: one prefill call over
the whole history, then one call per new patch.  Each phase is its own exported
program, traced through the patched backbone with Dynamo (``strict``: upstream's
``assert tensor.all()`` checks become runtime asserts) and dynamic in batch,
variates, history patches, cache capacity and the scaler's prefix length.  The
cache buffers are program inputs the programs update in place, so the cache
lives with the caller exactly as upstream's ``KVCache`` does.  A single variate
is its own pair of programs: with more than one, ``torch.export`` proves the
flattened (batch x variates) rows differ from the batch, which fails at one.

Outputs are the mixture's tensors (component weights, Student-T df, loc,
scale) plus the scaler's loc and scale; ``PackagedTotoBackbone`` rebuilds the
same ``MixtureSameFamily(Categorical, StudentT)`` upstream's head builds, with
upstream's own classes, and returns upstream's ``TotoOutput``.  The forecaster
then samples or takes the mean eagerly, unchanged.

Not in the package (``NotImplementedError``, never a silent fallback):
``use_kv_cache=False``, variate-label fusion (exogenous-variable fine-tunes),
the memory-efficient attention layout, a head other than the Student-T mixture.
"""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace
from typing import Any

import torch

from patchkit.errors import OutsideRange
from patchkit.verify.protocol import ExportProgram

MAX_BATCH = 4096  # TotoForecaster folds samples_per_batch into the batch
MAX_VARIATES = 256
PROGRAMS = ("prefill", "decode", "prefill_v1", "decode_v1")


def _geometry(backbone: torch.nn.Module) -> dict[str, Any]:
    from toto.model.distribution import MixtureOfStudentTsOutput

    if getattr(backbone, "fusion", None) is not None:
        raise NotImplementedError("Toto export: variate-label fusion (exogenous fine-tunes) is not exported")
    if backbone.use_memory_efficient_attention:
        raise NotImplementedError("Toto export: the memory-efficient attention cache layout is not exported")
    if not isinstance(backbone.output_distribution, MixtureOfStudentTsOutput):
        raise NotImplementedError(f"Toto export: head {type(backbone.output_distribution).__name__} is not exported")
    tmpl = backbone.allocate_kv_cache(batch_size=1, num_variates=1, max_time_steps=backbone.patch_embed.stride,
                                      device="cpu", dtype=torch.float32)
    layers, _, heads, _, head_dim = tmpl._keys.shape
    return {"patch_size": int(backbone.patch_embed.patch_size), "stride": int(backbone.patch_embed.stride),
            "cache_layers": int(layers), "num_heads": int(heads), "head_dim": int(head_dim),
            "layer_cache_map": list(tmpl._layer_cache_map_host), "max_patches": 512}


class StepUnit(torch.nn.Module):
    """``TotoBackbone.forward`` with a KV cache whose buffers are inputs: one phase (prefill or decode)."""

    def __init__(self, backbone: torch.nn.Module, empty: bool, geo: dict[str, Any]) -> None:
        super().__init__()
        self.backbone, self.empty, self.geo = backbone, empty, geo
        self.register_buffer("layer_map", torch.tensor(geo["layer_cache_map"], dtype=torch.int), persistent=False)

    def forward(self, inputs, padding_mask, id_mask, keys, values, current_idx, prefix):
        from toto.model.util import KVCache

        batch, variates, _ = inputs.shape
        layers, _, _, heads, capacity, head_dim = keys.shape
        cache = object.__new__(KVCache)  # upstream's cache over the caller's buffers (no allocation, no marks)
        for name, value in dict(batch_size=batch, num_variates=variates, num_layers=self.backbone.num_layers,
                                transformer_layers=list(self.backbone.transformer.layers),
                                embed_dim=self.backbone.embed_dim, num_heads=heads, max_seq_len=capacity,
                                device=inputs.device, dtype=keys.dtype, use_memory_efficient_attention=False).items():
            object.__setattr__(cache, name, value)
        cache._keys = keys.view(layers, batch * variates, heads, capacity, head_dim)
        cache._values = values.view(layers, batch * variates, heads, capacity, head_dim)
        cache._current_idx = current_idx
        cache._layer_cache_map, cache._layer_cache_map_host = self.layer_map, self.geo["layer_cache_map"]
        cache._host_empty = self.empty
        out = self.backbone(inputs=inputs, input_padding_mask=padding_mask, id_mask=id_mask, kv_cache=cache,
                            scaling_prefix_length=prefix.shape[0], num_exogenous_variables=0)
        mix = out.distribution
        comp = mix.component_distribution
        return mix.mixture_distribution.probs, comp.df, comp.loc, comp.scale, out.loc, out.scale


@contextlib.contextmanager
def _no_distribution_validation():
    """Distribution argument checks are data-dependent Python branches: off while tracing (values unchanged)."""
    prev = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(prev)


def programs(backbone: torch.nn.Module) -> list[ExportProgram]:
    from torch.export import Dim

    geo = _geometry(backbone)
    stride, max_n = geo["stride"], geo["max_patches"]
    dev = next(backbone.parameters()).device
    gen = torch.Generator().manual_seed(0)
    batch = Dim("batch", min=1, max=MAX_BATCH)
    variates = Dim("variates", min=2, max=MAX_VARIATES)
    patches = Dim("history_patches", min=2, max=max_n)
    capacity = Dim("cache_patches", min=2, max=2 * max_n)
    prefix = Dim("scaling_prefix", min=stride, max=stride * max_n)
    out = []
    for name in PROGRAMS:
        one = name.endswith("_v1")
        b, v, n = 2, (1 if one else 3), 8
        total = n + (0 if name.startswith("prefill") else 1)  # decode: the history plus one fed-back patch
        x = torch.randn(b, v, total * stride, generator=gen).cumsum(-1).to(dev)
        cache = backbone.allocate_kv_cache(batch_size=b, num_variates=v, max_time_steps=(n + 4) * stride,
                                           device=dev, dtype=torch.float32)
        lay, _, heads, cap, hd = cache._keys.shape
        keys = cache._keys.view(lay, b, v, heads, cap, hd).clone()
        current = cache._current_idx.clone() + (0 if name.startswith("prefill") else n)
        series = {0: batch, 2: stride * patches} if one else {0: batch, 1: variates, 2: stride * patches}
        kv = {1: batch, 4: capacity} if one else {1: batch, 2: variates, 4: capacity}
        shapes = {"inputs": series, "padding_mask": series, "id_mask": series, "keys": kv, "values": kv,
                  "current_idx": None, "prefix": {0: prefix}}
        args = (x, torch.ones_like(x, dtype=torch.bool), torch.zeros_like(x, dtype=torch.int), keys,
                keys.clone(), current, torch.empty(n * stride, device=dev))
        ranges = {"batch": [1, MAX_BATCH], "variates": [1, 1] if one else [2, MAX_VARIATES],
                  "history_patches": [2, max_n], "cache_patches": [2, 2 * max_n],
                  "scaling_prefix": [stride, stride * max_n]}
        out.append(ExportProgram(name, StepUnit(backbone, name.startswith("prefill"), geo).eval(), args, shapes,
                                 ranges, {"variates": 1} if one else {}, strict=True,
                                 context=_no_distribution_validation))
    return out


def export_config(backbone: torch.nn.Module) -> dict[str, Any]:
    return _geometry(backbone)


class PackagedKVCache:
    """The caller-held cache for the package: the same buffers upstream's ``KVCache`` allocates, laid out
    (layers, batch, variates, heads, capacity, head_dim), and the prefill/decode phase flag."""

    def __init__(self, geo: dict[str, Any], batch: int, variates: int, capacity: int, device, dtype) -> None:
        shape = (geo["cache_layers"], batch, variates, geo["num_heads"], capacity, geo["head_dim"])
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.current_idx = torch.zeros(geo["cache_layers"], device=device, dtype=torch.int)
        self.empty = True
        self.batch, self.variates, self.capacity = batch, variates, capacity

    def reset(self) -> None:
        self.keys.zero_()
        self.values.zero_()
        self.current_idx.zero_()
        self.empty = True


class PackagedTotoBackbone(torch.nn.Module):
    """``TotoBackbone`` for ``TotoForecaster``, running the package's prefill and decode programs."""

    def __init__(self, package: Any) -> None:
        super().__init__()
        self.package = package
        self.geo = package.record["config"]
        self.patch_embed = SimpleNamespace(patch_size=self.geo["patch_size"], stride=self.geo["stride"])
        self._device = torch.device(package.record["device"])

    @property
    def device(self) -> torch.device:
        return self._device

    def allocate_kv_cache(self, batch_size: int, num_variates: int, max_time_steps: int, device, dtype):
        capacity = math.ceil(max_time_steps / self.geo["stride"])
        return PackagedKVCache(self.geo, batch_size, num_variates, capacity, device, dtype)

    def forward(self, inputs, input_padding_mask, id_mask, kv_cache=None, scaling_prefix_length=None,
                num_exogenous_variables: int = 0):
        from toto.model.backbone import TotoOutput
        from toto.model.distribution import StudentT

        if not isinstance(kv_cache, PackagedKVCache) or scaling_prefix_length is None:
            raise NotImplementedError("the Toto package runs TotoForecaster.forecast(use_kv_cache=True); a call "
                                      "without the package's KV cache or a scaling prefix is not part of it")
        batch, variates, steps = inputs.shape
        stride, max_n = self.geo["stride"], self.geo["max_patches"]
        if (batch, variates) != (kv_cache.batch, kv_cache.variates):
            raise ValueError(f"inputs {tuple(inputs.shape)} do not match the cache's batch {kv_cache.batch} x "
                             f"{kv_cache.variates} variates")
        if not 1 <= batch <= MAX_BATCH or not 1 <= variates <= MAX_VARIATES:
            raise OutsideRange(f"batch {batch} x {variates} variates is outside the package's range: batch "
                             f"1..{MAX_BATCH}, variates 1..{MAX_VARIATES}")
        if steps % stride or not 2 <= steps // stride <= max_n:
            raise OutsideRange(f"a series of {steps} steps is outside the package's range: 2..{max_n} whole patches "
                             f"of {stride} steps (TotoForecaster pads to whole patches)")
        if not 2 <= kv_cache.capacity <= 2 * max_n or not stride <= scaling_prefix_length <= steps:
            raise OutsideRange(f"cache of {kv_cache.capacity} patches or scaling prefix {scaling_prefix_length} is "
                             f"outside the package's range (cache 2..{2 * max_n} patches, prefix {stride}..{steps})")
        name = ("prefill" if kv_cache.empty else "decode") + ("_v1" if variates == 1 else "")
        probs, df, loc, scale, out_loc, out_scale = self.package.program(name)(
            inputs, input_padding_mask, id_mask, kv_cache.keys, kv_cache.values, kv_cache.current_idx,
            torch.empty(int(scaling_prefix_length), device=inputs.device))
        kv_cache.empty = False
        mixture = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(probs=probs),
                                                        StudentT(df, loc, scale))
        return TotoOutput(mixture, out_loc, out_scale)


def forecaster(package: Any):
    """An upstream ``TotoForecaster`` whose backbone runs the package."""
    from toto.inference.forecaster import TotoForecaster

    return TotoForecaster(PackagedTotoBackbone(package))


def first_forecast(package: Any) -> tuple[Any, dict[str, float]]:
    """What a service does right after loading: 1 series of 4 variates x 512 steps, horizon 128, the mean.

    Returns (a zero-argument call that makes the forecast and returns its tensor, setup timings)."""
    from toto.data.util.dataset import MaskedTimeseries

    fc = forecaster(package)
    x = torch.randn(1, 4, 512, generator=torch.Generator().manual_seed(0)).cumsum(-1)
    inputs = MaskedTimeseries(series=x, padding_mask=torch.ones_like(x, dtype=torch.bool),
                              id_mask=torch.zeros_like(x, dtype=torch.int),
                              timestamp_seconds=torch.zeros_like(x, dtype=torch.int),
                              time_interval_seconds=torch.full((1, 4), 60, dtype=torch.int))
    return lambda: fc.forecast(inputs, prediction_length=128, num_samples=None, use_kv_cache=True).mean, {}
