"""Build a local git repository shaped like the Kronos upstream, for tests that cannot reach GitHub.

The sources are a small, runnable decoder-only tokenised forecaster written for
these tests.  They keep what patchkit cares about from the real project: the
paths (``model/kronos.py``, ``model/module.py``, ``model/__init__.py``), the public
names (``KronosTokenizer``, ``Kronos.decode_s1/decode_s2``,
``auto_regressive_inference``, ``KronosPredictor``), the ``sys.path.append("../")``
+ ``from model.module import *`` import, CRLF line endings in ``module.py``, and
the torch.compile hazards the Kronos patch set removes (a rotary cache written
to module attributes in forward; a decode loop feeding buffer views, then the
whole buffer, to compiled calls and handing one call's output to the next).

``make_kronos_repo(tmp_path)`` commits the tree twice (the second commit moves
lines and adds ``predict_batch``), so tests can vendor two different commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODULE_PY = '''\
"""Building blocks: quantiser, attention with rotary positions, embeddings."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class BSQuantizer(nn.Module):
    """Sign quantiser: each code bit is the sign of one projected channel."""

    def __init__(self, s1_bits, s2_bits, beta, gamma0, gamma, zeta, group_size):
        super().__init__()
        assert (s1_bits + s2_bits) % group_size == 0, "s1_bits + s2_bits must be a multiple of group_size"
        self.s1_bits = s1_bits
        self.s2_bits = s2_bits
        self.codebook_dim = s1_bits + s2_bits

    def to_indices(self, bits):
        weights = 2 ** torch.arange(bits.shape[-1], device=bits.device, dtype=torch.long)
        return ((bits > 0).long() * weights).sum(-1)

    def forward(self, z, half=False):
        z = F.normalize(z, dim=-1)
        q = torch.where(z > 0, torch.ones_like(z), -torch.ones_like(z)) / math.sqrt(self.codebook_dim)
        if half:
            return q, [self.to_indices(q[..., :self.s1_bits]), self.to_indices(q[..., self.s1_bits:])]
        return q, self.to_indices(q)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (x.float() * scale).type_as(x) * self.weight


class RotaryPositionalEmbedding(nn.Module):
    def __init__(self, dim, base=10000.0):
        super().__init__()
        self.register_buffer("inv_freq", base ** (-torch.arange(0, dim, 2).float() / dim))
        self.seq_len_cached = None
        self.cos_cached = None
        self.sin_cached = None

    def _update_cos_sin_cache(self, x, seq_len):
        if self.seq_len_cached != seq_len:
            self.seq_len_cached = seq_len
            pos = torch.arange(seq_len, device=x.device, dtype=self.inv_freq.dtype)
            angles = torch.outer(pos, self.inv_freq)
            angles = torch.cat([angles, angles], dim=-1)
            self.cos_cached = angles.cos().view(1, 1, seq_len, -1)
            self.sin_cached = angles.sin().view(1, 1, seq_len, -1)
        return self.cos_cached, self.sin_cached

    @staticmethod
    def _rotate_half(x):
        a, b = x.chunk(2, dim=-1)
        return torch.cat([-b, a], dim=-1)

    def forward(self, q, k):
        cos, sin = self._update_cos_sin_cache(q, q.shape[-2])
        return q * cos + self._rotate_half(q) * sin, k * cos + self._rotate_half(k) * sin


class _Attention(nn.Module):
    def __init__(self, d_model, n_heads, attn_dropout_p=0.0, resid_dropout_p=0.0):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = RotaryPositionalEmbedding(self.head_dim)
        self.attn_dropout_p = attn_dropout_p
        self.resid_dropout = nn.Dropout(resid_dropout_p)

    def _heads(self, proj, x):
        b, t, _ = x.shape
        return proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _attend(self, query, key, value, causal):
        q, k = self.rotary(self._heads(self.q_proj, query), self._heads(self.k_proj, key))
        v = self._heads(self.v_proj, value)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout_p if self.training else 0.0, is_causal=causal
        )
        b, _, t, _ = out.shape
        return self.resid_dropout(self.out_proj(out.transpose(1, 2).reshape(b, t, -1)))


class MultiHeadAttentionWithRoPE(_Attention):
    def forward(self, x, key_padding_mask=None):
        return self._attend(x, x, x, causal=True)


class MultiHeadCrossAttentionWithRoPE(_Attention):
    def forward(self, query, key, value, key_padding_mask=None):
        return self._attend(query, key, value, causal=self.training)


class TransformerBlock(nn.Module):
    def __init__(self, d_model, n_heads, ff_dim, ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.self_attn = MultiHeadAttentionWithRoPE(d_model, n_heads, attn_dropout_p, resid_dropout_p)
        self.norm2 = RMSNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ff_dim), nn.SiLU(), nn.Linear(ff_dim, d_model), nn.Dropout(ffn_dropout_p))

    def forward(self, x, key_padding_mask=None):
        x = x + self.self_attn(self.norm1(x), key_padding_mask=key_padding_mask)
        return x + self.ffn(self.norm2(x))


class HierarchicalEmbedding(nn.Module):
    def __init__(self, s1_bits, s2_bits, d_model):
        super().__init__()
        self.d_model = d_model
        self.emb_s1 = nn.Embedding(2 ** s1_bits, d_model)
        self.emb_s2 = nn.Embedding(2 ** s2_bits, d_model)
        self.fusion_proj = nn.Linear(2 * d_model, d_model)

    def forward(self, token_ids):
        s1_ids, s2_ids = token_ids
        both = torch.cat([self.emb_s1(s1_ids), self.emb_s2(s2_ids)], dim=-1)
        return self.fusion_proj(both * math.sqrt(self.d_model))


class DependencyAwareLayer(nn.Module):
    def __init__(self, d_model, n_heads=2):
        super().__init__()
        self.cross_attn = MultiHeadCrossAttentionWithRoPE(d_model, n_heads)
        self.norm = RMSNorm(d_model)

    def forward(self, hidden_states, sibling_embed, key_padding_mask=None):
        return self.norm(hidden_states + self.cross_attn(sibling_embed, hidden_states, hidden_states))


class DualHead(nn.Module):
    def __init__(self, s1_bits, s2_bits, d_model):
        super().__init__()
        self.proj_s1 = nn.Linear(d_model, 2 ** s1_bits)
        self.proj_s2 = nn.Linear(d_model, 2 ** s2_bits)

    def forward(self, x):
        return self.proj_s1(x)

    def cond_forward(self, x2):
        return self.proj_s2(x2)


class TemporalEmbedding(nn.Module):
    SIZES = (60, 24, 7, 32, 13)  # minute, hour, weekday, day, month

    def __init__(self, d_model, learn_pe=True):
        super().__init__()
        self.tables = nn.ModuleList([nn.Embedding(n, d_model) for n in self.SIZES])
        if not learn_pe:
            for table in self.tables:
                table.weight.requires_grad_(False)

    def forward(self, x):
        x = x.long()
        return sum(table(x[:, :, i]) for i, table in enumerate(self.tables))
'''

KRONOS_PY = '''\
import numpy as np
import pandas as pd
import torch
import sys

from tqdm import trange

sys.path.append("../")
from model.module import *


class KronosTokenizer(nn.Module):
    """Encode OHLCV bars into (s1, s2) token pairs and decode them back."""

    def __init__(self, d_in, d_model, n_heads, ff_dim, n_enc_layers, n_dec_layers, ffn_dropout_p, attn_dropout_p, resid_dropout_p, s1_bits, s2_bits, beta, gamma0, gamma, zeta, group_size):
        super().__init__()
        self.s1_bits = s1_bits
        self.s2_bits = s2_bits
        self.codebook_dim = s1_bits + s2_bits
        self.embed = nn.Linear(d_in, d_model)
        self.encoder = nn.ModuleList([TransformerBlock(d_model, n_heads, ff_dim) for _ in range(n_enc_layers - 1)])
        self.quant_embed = nn.Linear(d_model, self.codebook_dim)
        self.tokenizer = BSQuantizer(s1_bits, s2_bits, beta, gamma0, gamma, zeta, group_size)
        self.post_quant_embed = nn.Linear(self.codebook_dim, d_model)
        self.decoder = nn.ModuleList([TransformerBlock(d_model, n_heads, ff_dim) for _ in range(n_dec_layers - 1)])
        self.head = nn.Linear(d_model, d_in)

    def encode(self, x, half=False):
        z = self.embed(x)
        for layer in self.encoder:
            z = layer(z)
        _, indices = self.tokenizer(self.quant_embed(z), half=half)
        return indices

    def indices_to_bits(self, x, half=False):
        if half:
            width = self.codebook_dim // 2
            mask = 2 ** torch.arange(width, device=x[0].device)
            bits = torch.cat([(x[0].unsqueeze(-1) & mask) != 0, (x[1].unsqueeze(-1) & mask) != 0], dim=-1)
        else:
            mask = 2 ** torch.arange(self.codebook_dim, device=x.device)
            bits = (x.unsqueeze(-1) & mask) != 0
        return (bits.float() * 2 - 1) / self.codebook_dim ** 0.5

    def decode(self, x, half=False):
        z = self.post_quant_embed(self.indices_to_bits(x, half))
        for layer in self.decoder:
            z = layer(z)
        return self.head(z)


class Kronos(nn.Module):
    """Autoregressive model over (s1, s2) tokens: s1 first, then s2 conditioned on s1."""

    def __init__(self, s1_bits, s2_bits, n_layers, d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p, resid_dropout_p, token_dropout_p, learn_te):
        super().__init__()
        self.s1_bits = s1_bits
        self.s2_bits = s2_bits
        self.embedding = HierarchicalEmbedding(s1_bits, s2_bits, d_model)
        self.time_emb = TemporalEmbedding(d_model, learn_te)
        self.token_drop = nn.Dropout(token_dropout_p)
        self.transformer = nn.ModuleList([
            TransformerBlock(d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p, resid_dropout_p)
            for _ in range(n_layers)
        ])
        self.norm = RMSNorm(d_model)
        self.dep_layer = DependencyAwareLayer(d_model)
        self.head = DualHead(s1_bits, s2_bits, d_model)

    def decode_s1(self, s1_ids, s2_ids, stamp=None, padding_mask=None):
        x = self.embedding([s1_ids, s2_ids])
        if stamp is not None:
            x = x + self.time_emb(stamp)
        x = self.token_drop(x)
        for layer in self.transformer:
            x = layer(x, key_padding_mask=padding_mask)
        x = self.norm(x)
        return self.head(x), x

    def decode_s2(self, context, s1_ids, padding_mask=None):
        sibling_embed = self.embedding.emb_s1(s1_ids)
        return self.head.cond_forward(self.dep_layer(context, sibling_embed, key_padding_mask=padding_mask))


def top_k_top_p_filtering(logits, top_k=0, top_p=1.0, filter_value=-float("Inf")):
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1)))[0][..., -1, None]
        return logits.masked_fill(logits < kth, filter_value)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        drop = cum > top_p
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        return logits.masked_fill(drop.scatter(-1, order, drop), filter_value)
    return logits


def sample_from_logits(logits, temperature=1.0, top_k=None, top_p=None, sample_logits=True):
    logits = logits / temperature
    if top_k is not None or top_p is not None:
        logits = top_k_top_p_filtering(logits, top_k=top_k or 0, top_p=1.0 if top_p is None else top_p)
    probs = F.softmax(logits, dim=-1)
    if not sample_logits:
        return torch.topk(probs, k=1, dim=-1)[1]
    return torch.multinomial(probs, num_samples=1)


def auto_regressive_inference(tokenizer, model, x, x_stamp, y_stamp, max_context, pred_len, clip=5, T=1.0, top_k=0, top_p=0.99, sample_count=5, verbose=False):
    with torch.no_grad():
        x = torch.clip(x, -clip, clip)
        x = x.repeat_interleave(sample_count, dim=0)
        x_stamp = x_stamp.repeat_interleave(sample_count, dim=0)
        y_stamp = y_stamp.repeat_interleave(sample_count, dim=0)

        x_token = tokenizer.encode(x, half=True)
        initial_seq_len = x.size(1)
        batch_size = x.size(0)
        full_stamp = torch.cat([x_stamp, y_stamp], dim=1)

        generated_pre = x_token[0].new_empty(batch_size, pred_len)
        generated_post = x_token[1].new_empty(batch_size, pred_len)
        pre_buffer = x_token[0].new_zeros(batch_size, max_context)
        post_buffer = x_token[1].new_zeros(batch_size, max_context)
        keep = min(initial_seq_len, max_context)
        pre_buffer[:, :keep] = x_token[0][:, initial_seq_len - keep:]
        post_buffer[:, :keep] = x_token[1][:, initial_seq_len - keep:]

        steps = trange(pred_len) if verbose else range(pred_len)
        for i in steps:
            current_seq_len = initial_seq_len + i
            window_len = min(current_seq_len, max_context)
            if current_seq_len <= max_context:
                input_tokens = [pre_buffer[:, :window_len], post_buffer[:, :window_len]]
            else:
                input_tokens = [pre_buffer, post_buffer]
            current_stamp = full_stamp[:, current_seq_len - window_len:current_seq_len, :].contiguous()

            s1_logits, context = model.decode_s1(input_tokens[0], input_tokens[1], current_stamp)
            sample_pre = sample_from_logits(s1_logits[:, -1, :], temperature=T, top_k=top_k, top_p=top_p)
            s2_logits = model.decode_s2(context, sample_pre)
            sample_post = sample_from_logits(s2_logits[:, -1, :], temperature=T, top_k=top_k, top_p=top_p)

            generated_pre[:, i] = sample_pre.squeeze(-1)
            generated_post[:, i] = sample_post.squeeze(-1)
            if current_seq_len < max_context:
                pre_buffer[:, current_seq_len] = sample_pre.squeeze(-1)
                post_buffer[:, current_seq_len] = sample_post.squeeze(-1)
            else:
                pre_buffer.copy_(torch.roll(pre_buffer, shifts=-1, dims=1))
                post_buffer.copy_(torch.roll(post_buffer, shifts=-1, dims=1))
                pre_buffer[:, -1] = sample_pre.squeeze(-1)
                post_buffer[:, -1] = sample_post.squeeze(-1)

        total = initial_seq_len + pred_len
        start = max(0, total - max_context)
        full_pre = torch.cat([x_token[0], generated_pre], dim=1)[:, start:]
        full_post = torch.cat([x_token[1], generated_post], dim=1)[:, start:]
        z = tokenizer.decode([full_pre, full_post], half=True)
        z = z.reshape(-1, sample_count, z.size(1), z.size(2))
        return np.mean(z.cpu().numpy(), axis=1)


def calc_time_stamps(x_timestamp):
    return pd.DataFrame({
        "minute": x_timestamp.dt.minute,
        "hour": x_timestamp.dt.hour,
        "weekday": x_timestamp.dt.weekday,
        "day": x_timestamp.dt.day,
        "month": x_timestamp.dt.month,
    })


class KronosPredictor:
    def __init__(self, model, tokenizer, device=None, max_context=512, clip=5):
        self.device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        self.tokenizer = tokenizer.to(self.device)
        self.max_context = max_context
        self.clip = clip
        self.price_cols = ["open", "high", "low", "close"]
        self.vol_col = "volume"
        self.amt_vol = "amount"

    def _prepare(self, df, x_timestamp):
        if not isinstance(df, pd.DataFrame):
            raise ValueError("Input must be a pandas DataFrame.")
        if not all(col in df.columns for col in self.price_cols):
            raise ValueError(f"Price columns {self.price_cols} not found in DataFrame.")
        df = df.copy()
        if self.vol_col not in df.columns:
            df[self.vol_col] = 0.0
            df[self.amt_vol] = 0.0
        if self.amt_vol not in df.columns:
            df[self.amt_vol] = df[self.vol_col] * df[self.price_cols].mean(axis=1)
        cols = self.price_cols + [self.vol_col, self.amt_vol]
        if df[cols].isnull().values.any():
            raise ValueError("Input DataFrame contains NaN values in price or volume columns.")
        x = df[cols].values.astype(np.float32)
        mean, std = x.mean(axis=0), x.std(axis=0)
        x = np.clip((x - mean) / (std + 1e-5), -self.clip, self.clip)
        return x, calc_time_stamps(x_timestamp).values.astype(np.float32), mean, std

    def generate(self, x, x_stamp, y_stamp, pred_len, T, top_k, top_p, sample_count, verbose):
        as_tensor = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(self.device)
        preds = auto_regressive_inference(self.tokenizer, self.model, as_tensor(x), as_tensor(x_stamp), as_tensor(y_stamp),
                                          self.max_context, pred_len, self.clip, T, top_k, top_p, sample_count, verbose)
        return preds[:, -pred_len:, :]

    def predict(self, df, x_timestamp, y_timestamp, pred_len, T=1.0, top_k=0, top_p=0.9, sample_count=1, verbose=True):
        x, x_stamp, mean, std = self._prepare(df, x_timestamp)
        y_stamp = calc_time_stamps(y_timestamp).values.astype(np.float32)
        preds = self.generate(x[None], x_stamp[None], y_stamp[None], pred_len, T, top_k, top_p, sample_count, verbose)
        cols = self.price_cols + [self.vol_col, self.amt_vol]
        return pd.DataFrame(preds[0] * (std + 1e-5) + mean, columns=cols, index=y_timestamp)
'''

PREDICT_BATCH_PY = '''
    def predict_batch(self, df_list, x_timestamp_list, y_timestamp_list, pred_len, T=1.0, top_k=0, top_p=0.9, sample_count=1, verbose=True):
        prepared = [self._prepare(df, ts) for df, ts in zip(df_list, x_timestamp_list)]
        if len({p[0].shape[0] for p in prepared}) != 1:
            raise ValueError("Parallel prediction requires all series to have consistent historical lengths.")
        x = np.stack([p[0] for p in prepared])
        x_stamp = np.stack([p[1] for p in prepared])
        y_stamp = np.stack([calc_time_stamps(ts).values.astype(np.float32) for ts in y_timestamp_list])
        preds = self.generate(x, x_stamp, y_stamp, pred_len, T, top_k, top_p, sample_count, verbose)
        cols = self.price_cols + [self.vol_col, self.amt_vol]
        return [pd.DataFrame(preds[i] * (p[3] + 1e-5) + p[2], columns=cols, index=y_timestamp_list[i])
                for i, p in enumerate(prepared)]
'''

INIT_PY = '''\
from .kronos import KronosTokenizer, Kronos, KronosPredictor

model_dict = {
    "kronos_tokenizer": KronosTokenizer,
    "kronos": Kronos,
    "kronos_predictor": KronosPredictor,
}


def get_model_class(model_name):
    if model_name not in model_dict:
        raise NotImplementedError(f"Model {model_name} not found in model_dict")
    return model_dict[model_name]
'''

REQUIREMENTS = "numpy\npandas\ntorch>=2.0\ntqdm\n"

#: The tiny configuration the fixture model is built with in tests (same keywords as upstream).
TOKENIZER_KW = dict(d_in=6, d_model=32, n_heads=2, ff_dim=64, n_enc_layers=2, n_dec_layers=2, ffn_dropout_p=0,
                    attn_dropout_p=0, resid_dropout_p=0, s1_bits=4, s2_bits=4, beta=0.05, gamma0=1.0, gamma=1.1,
                    zeta=0.05, group_size=4)
MODEL_KW = dict(s1_bits=4, s2_bits=4, n_layers=2, d_model=32, n_heads=2, ff_dim=64, ffn_dropout_p=0,
                attn_dropout_p=0, resid_dropout_p=0, token_dropout_p=0, learn_te=True)


@dataclass(frozen=True)
class KronosRepo:
    path: Path
    #: oldest first
    commits: tuple[str, str]
    #: a path outside ``model/`` whose content must never be vendored
    big_file: str = "finetune_csv/data/bars_5min.csv"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def _big_csv(rows: int = 60_000) -> bytes:
    lines = ["timestamps,open,high,low,close,volume,amount"]
    price = 100.0
    for i in range(rows):
        price += ((i * 7919) % 13 - 6) * 0.01
        lines.append(f"2024-01-01 {i // 12 % 24:02d}:{i % 12 * 5:02d},{price:.2f},{price + 0.1:.2f},{price - 0.1:.2f},{price:.2f},{1000 + i % 97},{price * 1000:.1f}")
    return ("\n".join(lines) + "\n").encode()


LICENSE = """Test fixture licence

The sources of this Kronos-shaped test repository were written for patchkit's
test-suite; they may be used, copied and modified without restriction.
"""


def write_tree(root: Path, *, second: bool = False) -> None:
    """Write the fixture sources under ``root`` (the first or the second commit's version)."""
    model = root / "model"
    model.mkdir(parents=True, exist_ok=True)
    module_py = MODULE_PY
    kronos_py = KRONOS_PY
    if second:
        # Moves every hazard site down and adds an API, like an upstream commit would.
        module_py = module_py.replace('import math\n', 'import math\n\n__all_blocks__ = ("RotaryPositionalEmbedding", "TransformerBlock")\n', 1)
        kronos_py = kronos_py + PREDICT_BATCH_PY
    (model / "module.py").write_bytes(_crlf(module_py))
    (model / "kronos.py").write_bytes(kronos_py.encode())
    (model / "__init__.py").write_bytes(INIT_PY.encode())
    (root / "requirements.txt").write_bytes(REQUIREMENTS.encode())
    (root / "README.md").write_bytes(b"Kronos-shaped test repository.\n")
    (root / "LICENSE").write_bytes(LICENSE.encode())
    data = root / "finetune_csv" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "bars_5min.csv").write_bytes(_big_csv())


def make_kronos_repo(tmp_path: Path, *, bare_mirror: bool = False) -> KronosRepo:
    """Create ``tmp_path/kronos`` as a git repository with two commits; optionally a bare mirror of it.

    Returns the repository path (the bare mirror when ``bare_mirror``) and the
    two commit shas, oldest first.
    """
    import git

    work = Path(tmp_path) / "kronos"
    work.mkdir(parents=True)
    repo = git.Repo.init(work)
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "fixture")
        cfg.set_value("user", "email", "fixture@example.invalid")
        cfg.set_value("core", "autocrlf", "false")
    shas = []
    for second in (False, True):
        write_tree(work, second=second)
        repo.git.add(A=True)
        repo.git.commit("-q", "-m", "second commit: predict_batch" if second else "initial commit")
        shas.append(repo.head.commit.hexsha)
    path = work
    if bare_mirror:
        path = Path(tmp_path) / "kronos-mirror.git"
        git.Repo.clone_from(str(work), str(path), bare=True)
    return KronosRepo(path=path, commits=(shas[0], shas[1]))
