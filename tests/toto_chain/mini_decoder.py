"""A tiny patch-autoregressive decoder with a slot-indexed KV cache.

Test material for the Toto codemod chain: it has the same hazard shapes as
Toto's decode path (slot map read with ``.item()``, tensor-bounded cache
writes, a tensor overflow assert, reads sliced to the filled length, a
``seq_pos_offset == 0`` causal flag, a prefix slice from the cache length and
inputs grown with ``torch.cat``), in a few dozen lines of its own.
"""

from dataclasses import dataclass, field
from math import ceil

import torch
import torch.nn.functional as F


@dataclass
class StepCache:
    layers: list
    rows: int
    heads: int
    head_dim: int
    max_len: int

    _keys: torch.Tensor = field(init=False)
    _values: torch.Tensor = field(init=False)
    _filled: torch.Tensor = field(init=False)
    _slot_table: torch.Tensor = field(init=False)

    def __post_init__(self):
        timed = [i for i, layer in enumerate(self.layers) if layer.causal]
        slots = max(1, len(timed))
        self._keys = torch.zeros(slots, self.rows, self.heads, self.max_len, self.head_dim)
        self._values = torch.zeros_like(self._keys)
        self._filled = torch.zeros(slots, dtype=torch.int)
        self._slot_table = torch.zeros(len(self.layers), dtype=torch.int)
        for slot, i in enumerate(timed):
            self._slot_table[i] = slot

    def length(self, slot: int) -> int:
        return int(self._filled[slot].item())

    def seq_len(self, layer: int) -> int:
        slot = int(self._slot_table[layer].item())
        return self.length(slot)

    def __getitem__(self, layer: int):
        slot = int(self._slot_table[layer].item())
        end = int(self._filled[slot].item())
        return self._keys[slot, :, :, :end, :], self._values[slot, :, :, :end, :]

    def append(self, layer: int, kv):
        slot = int(self._slot_table[layer].item())
        k, v = kv
        start = self._filled[slot]
        end = start + k.shape[2]
        assert end <= self.max_len, f"cache overflow {end} > {self.max_len}"
        self._keys[slot, :, :, start:end, :] = k
        self._values[slot, :, :, start:end, :] = v
        self._filled[slot] = end

    def reset(self):
        self._keys.zero_()
        self._values.zero_()
        self._filled.zero_()


class Block(torch.nn.Module):
    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.GELU(), torch.nn.Linear(2 * width, width))

    def attend(self, q, k, v, offset, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=(mask is None and offset == 0))

    def forward(self, layer_idx: int, x: torch.Tensor, kv_cache=None) -> torch.Tensor:
        rows, steps, width = x.shape
        if not self.causal:
            return x + self.mlp(x)
        q, k, v = self.qkv(x).view(rows, steps, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        offset = 0
        if kv_cache is not None:
            offset = kv_cache.seq_len(layer_idx)
        angle = (torch.arange(steps, dtype=x.dtype) + offset).unsqueeze(-1) * 0.05
        q, k = q * torch.cos(angle) + 0.1 * torch.sin(angle), k * torch.cos(angle)
        if kv_cache is not None:
            kv_cache.append(layer_idx, (k, v))
            k, v = kv_cache[layer_idx]
        y = self.attend(q, k, v, offset)
        return x + self.out(y.transpose(1, 2).reshape(rows, steps, width))


class TinyDecoder(torch.nn.Module):
    def __init__(self, step: int = 4, width: int = 16, heads: int = 2, layers: int = 4):
        super().__init__()
        self.step, self.heads, self.width = step, heads, width
        self.embed = torch.nn.Linear(step, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads, causal=i % 2 == 0) for i in range(layers))
        self.head = torch.nn.Linear(width, step)

    def allocate(self, rows: int, max_steps: int) -> StepCache:
        return StepCache(list(self.blocks), rows, self.heads, self.width // self.heads, ceil(max_steps / self.step))

    def forward(self, series: torch.Tensor, kv_cache=None) -> torch.Tensor:
        x = series * 0.5
        if kv_cache is not None:
            cached = kv_cache.length(0)
            done = max(0, self.step * int(cached))
            x = x[:, done:]
            assert (done == 0) or (x.shape[-1] == self.step), "decode one patch at a time"
        h = self.embed(x.unflatten(-1, (-1, self.step)))
        for i, block in enumerate(self.blocks):
            h = block(i, h, kv_cache)
        return self.head(h).flatten(-2)


def forecast(model: TinyDecoder, series: torch.Tensor, horizon: int, use_cache: bool = True) -> torch.Tensor:
    kv_cache = model.allocate(series.shape[0], series.shape[-1] + horizon) if use_cache else None
    for _ in range(horizon // model.step):
        out = model(series, kv_cache)
        series = torch.cat([series, out[:, -model.step :]], dim=-1)
    return series[:, -horizon:]
