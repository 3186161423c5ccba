"""patchkit's runtime helpers: the functions that patched upstream code calls.

This file is copied verbatim into each patched tree, once per top-level package, as
``<package>/_patchkit_helpers.py`` (``base.HELPERS_MODULE``); the codemods that route or mark calls insert
``from .._patchkit_helpers import <name>`` into the files they rewrite.  It imports nothing but ``sys`` and
``torch`` at import time, so a patched tree runs without patchkit installed, and nothing here loads
``torch._dynamo`` unless something is compiled already.

Every helper leaves eager code alone: called outside ``torch.compile`` (or with a callee that is not compiled)
it returns its input or its callee unchanged, so eager values, errors and aliasing are upstream's.
"""

from __future__ import annotations

import sys

import torch

#: the chunk length of ``_patchkit_chunked_reduce``
CHUNK = 256


def _patchkit_is_compiled(step):
    """patchkit: does ``step`` run under torch.compile (``torch.compile(module)``, ``module.compile()`` or a
    compiled function), called from outside a compiled region?  False when torch._dynamo was never loaded."""
    if "torch._dynamo" not in sys.modules or torch.compiler.is_compiling():
        return False
    return (
        isinstance(step, torch._dynamo.eval_frame.OptimizedModule)
        or getattr(step, "_compiled_call_impl", None) is not None
        or hasattr(step, "_torchdynamo_orig_callable")
    )


def _patchkit_pad_single_row(step, rows, distinct=(), outputs=(), factors=(), compiled=None):
    """patchkit pad-single-row: ``step`` itself unless it (or ``compiled``, the module it calls) runs under
    torch.compile.  Compiled, a call whose keyword tensors ``rows`` and ``distinct`` have one row (and whose int
    arguments ``factors``, which multiply the rows ``step`` hands on, are 1) runs ``step`` on two: the row and a copy
    of it (``distinct`` tensors, ids, get ``+ 1`` on the copy, so it is a group of its own), and keeps the first row
    of the result, or of its attributes ``outputs``.  Dynamo specialises a size-1 dim; two rows share the batch's
    dynamic graph.  Marks that dynamic-step-inputs put on an input carry over to its two-row copy.  A call without
    one of its ``distinct`` tensors runs as is: nothing would keep the copy out of the row's group."""
    if not _patchkit_is_compiled(step if compiled is None else compiled):
        return step

    def call(*args, **kwargs):
        if any(kwargs.get(name) is None for name in distinct):
            return step(*args, **kwargs)
        given = [name for name in (*rows, *distinct) if kwargs.get(name) is not None]
        if not given or any(kwargs[name].shape[0] != 1 for name in given):
            return step(*args, **kwargs)
        if any(kwargs.get(name, 1) != 1 for name in factors):
            return step(*args, **kwargs)
        for name in given:
            one = kwargs[name]
            two = torch.cat([one, one + 1 if name in distinct else one])
            for mark in ("_dynamo_weak_dynamic_indices", "_dynamo_dynamic_indices"):
                if hasattr(one, mark):
                    setattr(two, mark, set(getattr(one, mark)))
            kwargs[name] = two
        out = step(*args, **kwargs)
        if not outputs:
            return out[:1]
        for name in outputs:
            setattr(out, name, getattr(out, name)[:1])
        return out

    return call


def _patchkit_eager_when(step, when, compiled=None):
    """patchkit eager-when: ``step`` itself unless it (or ``compiled``, the module it calls) runs under torch.compile
    and ``when()`` holds; then the call runs under ``torch.compiler.set_stance("force_eager")``: the compiled
    module's own eager code, no graph compiled or looked up.  ``when`` is only called for a compiled step."""
    if not _patchkit_is_compiled(step if compiled is None else compiled) or not when():
        return step

    def call(*args, **kwargs):
        from torch._dynamo.utils import counters

        counters["patchkit"]["eager_when"] += 1  # verify reports these calls beside the graphs
        with torch.compiler.set_stance("force_eager"):
            return step(*args, **kwargs)

    return call


def _patchkit_mark_dynamic(tensor, dims):
    """patchkit dynamic-step-inputs: compile this input's dims dynamic from the first call; eager: no effect
    (torch._dynamo is not imported for it: until something is compiled, it is not loaded)."""
    if not torch.compiler.is_compiling() and "torch._dynamo" in sys.modules:
        torch._dynamo.maybe_mark_dynamic(tensor, dims)
    return tensor


def _patchkit_dynamic_int(step, value):
    """patchkit dynamic-step-inputs: an int argument of a compiled ``step`` as ``DynamicInt``, so the first graph
    is already dynamic in it; ``value`` itself when ``step`` is not compiled (eager calls get upstream's int)."""
    if _patchkit_is_compiled(step) and type(value) is int:
        from torch.fx.experimental.sym_node import DynamicInt

        return DynamicInt(value)
    return value


def _patchkit_contiguous(tensor):
    """patchkit contiguous-step-inputs: ``tensor`` with canonical contiguous strides: itself when it has them,
    else a copy.  Unlike ``.contiguous()`` this also copies a tensor whose size-1 dims carry other strides
    (a one-row slice of a wider buffer), which Dynamo guards on all the same."""
    expected, step = [], 1
    for size in reversed(tensor.shape):
        expected.append(step)
        step *= size
    if tensor.stride() == tuple(reversed(expected)):
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def _patchkit_chunked_reduce(reduction, x, dim, keepdim=False):
    """patchkit chunked-reduction, compiled code only: ``torch.<reduction>(x, dim=dim, keepdim=keepdim)`` for one
    int ``dim``, as a sum over chunks of ``CHUNK`` (256) and then over the chunk sums.  Inductor's CPU code switches
    to a cascade sum for a float reduction over more than 4096 elements and guards on the size, so a dynamic length
    compiled one graph up to 4096 and another past it; here no reduction has a dynamic size but the chunk count.
    One chunk of padding more than needed keeps that count above 1, which Dynamo would specialise."""
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16) or not isinstance(dim, int) or x.dim() == 0:
        return getattr(torch, reduction)(x, dim=dim, keepdim=keepdim)
    dim = dim % x.dim()
    moved = x.movedim(dim, -1)
    length = moved.shape[-1]
    skip_nan = reduction in ("nansum", "nanmean")
    padded = torch.nn.functional.pad(moved, (0, CHUNK + (-length) % CHUNK), value=float("nan") if skip_nan else 0.0)
    chunks = padded.unflatten(-1, (-1, CHUNK))
    partial = chunks.nansum(-1, dtype=torch.float32) if skip_nan else chunks.sum(-1, dtype=torch.float32)
    total = partial.sum(-1)
    if reduction == "nanmean":
        total = total / (~torch.isnan(moved)).sum(-1)
    elif reduction == "mean":
        total = total / length
    if keepdim:
        total = total.unsqueeze(dim)
    return total.to(x.dtype)


def _patchkit_offset_causal_mask(attn_mask, offset, query, key):
    """patchkit offset-causal-mask: the call's own attention, for queries at ``offset + i`` over a preallocated
    key buffer.

    A Python int offset (eager runs, or no static cache): ``attn_mask`` is
    returned unchanged and the call is exactly upstream's.  A 0-d tensor offset
    (compiled runs over the whole buffer) gives the boolean mask of what
    upstream's call over the filled keys ``j < offset + len(query)`` attends to:
    with no mask, causal (``j <= i``) at offset 0 and every filled key past it
    (upstream passes ``is_causal=False`` then); with a mask, that mask over the
    filled keys, padded out with hidden positions.
    """
    if not torch.is_tensor(offset):
        return attn_mask
    steps = query.shape[-2]
    key_pos = torch.arange(key.shape[-2], device=key.device)
    if attn_mask is None:
        last = torch.where(offset == 0, torch.arange(steps, device=key.device), offset + steps - 1)
        return key_pos <= last.unsqueeze(-1)
    filled = key_pos < offset + steps
    pad = key.shape[-2] - attn_mask.shape[-1]
    if attn_mask.dtype == torch.bool:
        return torch.nn.functional.pad(attn_mask, (0, pad), value=False) & filled
    return torch.nn.functional.pad(attn_mask, (0, pad), value=float("-inf")).masked_fill(~filled, float("-inf"))
