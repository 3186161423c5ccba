"""Kronos's exact decode cache: appended to ``model/kronos.py`` by the ``step-cache`` step of patches/kronos.py.

patchkit's own code, written against the module structure of Kronos's ``model/module.py``.
"""
import torch


class _PatchkitDecodeCache:
    """Exact KV cache for one ``auto_regressive_inference`` call (patchkit, step ``step-cache``).

    Stands in for the model in the decode loop: ``decode_s1`` / ``decode_s2`` take
    the arguments and give the values the model's own methods give, but while
    the window grows by one token per call (the window starts at position 0,
    so every earlier position, its rotary phase and, through the causal mask,
    its hidden state stay what they were) only the new token runs through the
    transformer layers, attending over per-layer key/value buffers of
    ``max_context`` positions.

    * The first call (the look-back window) runs each upstream block as it is
      and, from the same normed block input, computes that block's keys and
      values for the buffers.
    * ``decode_s2`` after a cached ``decode_s1`` runs the dependency layer's
      cross-attention over the whole window as upstream does, and the residual,
      norm and s2 head on the last position only: the one the loop reads.
    * Any other call (a window that rolled past ``max_context``, so that
      positions restart; a padding mask; a model in training mode; a call
      under ``torch.compile``) goes to the model's own method, and the cache
      stays off for the rest of the loop: upstream's full recompute.

    No random numbers are drawn here, so sampled paths draw in upstream's order.
    """

    def __init__(self, model, max_context):
        self.model = model
        self.max_context = max_context
        self.length = 0  # positions held; -1 once the loop has left the growing window
        self.keys = []
        self.values = []
        self.hidden = None
        self.cached_s1 = False

    # -- the model's decode API ---------------------------------------------------------
    def decode_s1(self, s1_ids, s2_ids, stamp=None, padding_mask=None):
        m = self.model
        window = s1_ids.shape[1]
        usable = (
            self.length >= 0 and padding_mask is None and not m.training
            and not torch.compiler.is_compiling() and window <= self.max_context
        )
        self.cached_s1 = False
        if usable and self.length == 0:
            out = self._prefill(s1_ids, s2_ids, stamp)
        elif usable and window == self.length + 1 and s1_ids.shape[0] == self.hidden.shape[0]:
            out = self._extend(s1_ids[:, -1:], s2_ids[:, -1:], None if stamp is None else stamp[:, -1:])
        else:
            self.length = -1
            self.keys, self.values, self.hidden = [], [], None
            return m.decode_s1(s1_ids, s2_ids, stamp, padding_mask)
        self.cached_s1 = True
        return out

    def decode_s2(self, context, s1_ids, padding_mask=None):
        m = self.model
        if not (self.cached_s1 and padding_mask is None and context.shape[1] == self.length):
            return m.decode_s2(context, s1_ids, padding_mask)
        sibling_embed = m.embedding.emb_s1(s1_ids)
        attn_out = m.dep_layer.cross_attn(sibling_embed, context, context)
        return m.head.cond_forward(m.dep_layer.norm(context[:, -1:] + attn_out))

    # -- cached paths ---------------------------------------------------------------------
    def _embed(self, s1_ids, s2_ids, stamp):
        m = self.model
        x = m.embedding([s1_ids, s2_ids])
        if stamp is not None:
            x = x + m.time_emb(stamp)
        return m.token_drop(x)

    def _heads(self, attn, proj, x):
        batch, steps, _ = x.shape
        return proj(x).view(batch, steps, attn.n_heads, attn.head_dim).transpose(1, 2)

    def _rotate(self, attn, x, end):
        """Rotary phases of positions ``end - x.shape[-2] .. end - 1``, from the module's own table."""
        cos, sin = attn.rotary._update_cos_sin_cache(x, end)
        steps = x.shape[-2]
        cos, sin = cos[..., end - steps:end, :], sin[..., end - steps:end, :]
        return (x * cos) + (attn.rotary._rotate_half(x) * sin)

    def _prefill(self, s1_ids, s2_ids, stamp):
        m = self.model
        batch, window = s1_ids.shape
        x = self._embed(s1_ids, s2_ids, stamp)
        self.keys, self.values = [], []
        for layer in m.transformer:
            attn = layer.self_attn
            h = layer.norm1(x)
            k = self._rotate(attn, self._heads(attn, attn.k_proj, h), window)
            v = self._heads(attn, attn.v_proj, h)
            shape = (batch, attn.n_heads, self.max_context, attn.head_dim)
            self.keys.append(k.new_zeros(shape))
            self.values.append(v.new_zeros(shape))
            self.keys[-1][:, :, :window] = k
            self.values[-1][:, :, :window] = v
            x = layer(x)  # upstream's block, unchanged
        x = m.norm(x)
        self.hidden = x.new_zeros(batch, self.max_context, x.shape[-1])
        self.hidden[:, :window] = x
        self.length = window
        return m.head(x), x

    def _extend(self, s1_new, s2_new, stamp_new):
        m = self.model
        pos = self.length
        x = self._embed(s1_new, s2_new, stamp_new)
        for i, layer in enumerate(m.transformer):
            attn = layer.self_attn
            h = layer.norm1(x)
            q = self._rotate(attn, self._heads(attn, attn.q_proj, h), pos + 1)
            self.keys[i][:, :, pos:pos + 1] = self._rotate(attn, self._heads(attn, attn.k_proj, h), pos + 1)
            self.values[i][:, :, pos:pos + 1] = self._heads(attn, attn.v_proj, h)
            out = torch.nn.functional.scaled_dot_product_attention(
                q, self.keys[i][:, :, :pos + 1], self.values[i][:, :, :pos + 1],
                dropout_p=0.0, is_causal=False,  # one query at the last position sees every key: the causal row
            )
            out = out.transpose(1, 2).contiguous().view(x.shape[0], 1, -1)
            x = x + attn.resid_dropout(attn.out_proj(out))
            x = x + layer.ffn(layer.norm2(x))
        x = m.norm(x)
        self.hidden[:, pos:pos + 1] = x
        self.length = pos + 1
        return m.head(x), self.hidden[:, :pos + 1]
