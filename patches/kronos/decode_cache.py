"""Kronos's exact decode cache: appended to ``model/kronos.py`` by the ``step-cache`` step of patches/kronos/.

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

    Compiled steps: when the model has a ``patchkit_step_compiler`` attribute
    (``model.patchkit_step_compiler = torch.compile``, or any callable that
    takes and returns a function), each growing-window step runs as two
    compiled functions of static shape, the whole ``max_context`` buffers with
    a mask of filled positions and the position as a 0-d tensor: one graph
    serves every step and every window length.  ``_static_s1`` takes the new
    token to its s1 logits and writes the caches; ``_static_s2`` takes the
    drawn s1 token to the s2 logits.  The sampler runs between them in
    upstream's Python, so a seed gives eager's draws (inductor's own RNG would
    draw differently); compiled logits may differ from eager ones in the last
    bits, which can flip a draw that sits on a boundary.
    """

    def __init__(self, model, max_context):
        self.model = model
        self.max_context = max_context
        self.length = 0  # positions held; -1 once the loop has left the growing window
        self.keys = []
        self.values = []
        self.hidden = None
        self.cached_s1 = False
        self.prefilled = 0  # the look-back window's length

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
            # the new position, contiguous: a slice of the growing window would change strides every step
            new = (s1_ids[:, -1:].contiguous(), s2_ids[:, -1:].contiguous(),
                   None if stamp is None else stamp[:, -1:].contiguous())
            steps = self._compiled_steps()
            if steps is None:
                out = self._extend(*new)
            else:
                pos = torch.tensor(self.length, device=s1_ids.device)
                self._mark_batch_dynamic(*new)
                logits = steps[0](self, *new, pos)
                self.length += 1
                out = logits, self.hidden[:, :self.length]
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
        steps = self._compiled_steps()
        if steps is not None and self.length > self.prefilled:
            self._mark_batch_dynamic(s1_ids)
            return steps[1](self, s1_ids, torch.tensor(self.length - 1, device=s1_ids.device))
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

    def _phases(self, attn, x, end, index=None):
        """cos/sin rows of the module's own ``end``-position table: the last ``x.shape[-2]`` positions, or those
        in ``index`` (a 1-element tensor).  Computed once per layer, for the query and the key alike."""
        cos, sin = attn.rotary._update_cos_sin_cache(x, end)
        if index is None:
            steps = x.shape[-2]
            return cos[..., end - steps:end, :], sin[..., end - steps:end, :]
        return cos.index_select(-2, index), sin.index_select(-2, index)

    def _rotate(self, attn, x, phases):
        cos, sin = phases
        return (x * cos) + (attn.rotary._rotate_half(x) * sin)

    def _prefill(self, s1_ids, s2_ids, stamp):
        m = self.model
        batch, window = s1_ids.shape
        x = self._embed(s1_ids, s2_ids, stamp)
        self.keys, self.values = [], []
        for layer in m.transformer:
            attn = layer.self_attn
            h = layer.norm1(x)
            k = self._heads(attn, attn.k_proj, h)
            k = self._rotate(attn, k, self._phases(attn, k, window))
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
        self.length = self.prefilled = window
        return m.head(x), x

    def _extend(self, s1_new, s2_new, stamp_new):
        m = self.model
        pos = self.length
        x = self._embed(s1_new, s2_new, stamp_new)
        for i, layer in enumerate(m.transformer):
            attn = layer.self_attn
            h = layer.norm1(x)
            q = self._heads(attn, attn.q_proj, h)
            phases = self._phases(attn, q, pos + 1)
            q = self._rotate(attn, q, phases)
            self.keys[i][:, :, pos:pos + 1] = self._rotate(attn, self._heads(attn, attn.k_proj, h), phases)
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

    # -- compiled steps: static shapes, one graph for every step -------------------------------
    def _compiled_steps(self):
        compiler = getattr(self.model, "patchkit_step_compiler", None)
        if compiler is None:
            self._warn_hand_compiled()
            return None
        steps = self.model.__dict__.get("_patchkit_compiled_steps")
        if steps is None or steps[0] is not compiler:
            steps = (compiler, compiler(type(self)._static_s1), compiler(type(self)._static_s2))
            self.model.__dict__["_patchkit_compiled_steps"] = steps
        return steps[1:]

    _hand_compiled_warned = False

    def _warn_hand_compiled(self):
        """Once per process: ``decode_s1``/``decode_s2`` compiled by hand (``model.decode_s1 = torch.compile(...)``)
        never see the growing window, which this cache serves eagerly; the compiled functions run only once the
        window rolls, and then as upstream's full recompute."""
        if _PatchkitDecodeCache._hand_compiled_warned:
            return
        own = self.model.__dict__
        if any(hasattr(own.get(name), "_torchdynamo_orig_callable") for name in ("decode_s1", "decode_s2")):
            import warnings

            _PatchkitDecodeCache._hand_compiled_warned = True
            warnings.warn(
                "Kronos.decode_s1/decode_s2 are compiled by hand, but the patched decode cache serves the growing "
                "window with its own steps, so those steps run eagerly and the compiled functions only once the "
                "window rolls; compile with `patchkit.runtime.compile_model(model)` instead",
                UserWarning, stacklevel=4)

    def _mark_batch_dynamic(self, *inputs):
        """Compile the batch dim dynamic from the first call: a stream of batch sizes then needs one graph (and
        one more for a single row, which Dynamo specialises)."""
        for t in (*inputs, *self.keys, *self.values, self.hidden):
            if t is not None:
                torch._dynamo.maybe_mark_dynamic(t, 0)

    def _static_s1(self, s1_new, s2_new, stamp_new, pos):
        m = self.model
        index = pos.view(1)
        filled = (torch.arange(self.max_context, device=pos.device) <= pos).view(1, 1, 1, -1)
        x = self._embed(s1_new, s2_new, stamp_new)
        for i, layer in enumerate(m.transformer):
            attn = layer.self_attn
            h = layer.norm1(x)
            q = self._heads(attn, attn.q_proj, h)
            phases = self._phases(attn, q, self.max_context, index)
            q = self._rotate(attn, q, phases)
            self.keys[i].index_copy_(2, index, self._rotate(attn, self._heads(attn, attn.k_proj, h), phases))
            self.values[i].index_copy_(2, index, self._heads(attn, attn.v_proj, h))
            out = torch.nn.functional.scaled_dot_product_attention(
                q, self.keys[i], self.values[i], attn_mask=filled, dropout_p=0.0)
            out = out.transpose(1, 2).contiguous().view(x.shape[0], 1, -1)
            x = x + attn.resid_dropout(attn.out_proj(out))
            x = x + layer.ffn(layer.norm2(x))
        x = m.norm(x)
        self.hidden.index_copy_(1, index, x)
        return m.head(x)

    def _static_s2(self, s1_ids, pos):
        """The dependency layer over the whole buffer with a mask; upstream's cross-attention applies the
        rotary phase of its one query position (position 0) to the query and every key."""
        m = self.model
        cross = m.dep_layer.cross_attn
        filled = (torch.arange(self.max_context, device=pos.device) <= pos).view(1, 1, 1, -1)
        sibling_embed = m.embedding.emb_s1(s1_ids)
        zero = torch.zeros(1, dtype=torch.long, device=pos.device)
        q = self._heads(cross, cross.q_proj, sibling_embed)
        phases = self._phases(cross, q, 1, zero)
        q = self._rotate(cross, q, phases)
        k = self._rotate(cross, self._heads(cross, cross.k_proj, self.hidden), phases)
        v = self._heads(cross, cross.v_proj, self.hidden)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=filled, dropout_p=0.0)
        out = cross.resid_dropout(cross.out_proj(out.transpose(1, 2).contiguous().view(s1_ids.shape[0], 1, -1)))
        last = self.hidden.index_select(1, pos.view(1))
        return m.head.cond_forward(m.dep_layer.norm(last + out))
