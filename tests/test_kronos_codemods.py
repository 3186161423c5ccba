"""Behaviour tests for the codemods the Kronos patch set uses.

Their golden cases (``tests/fixtures/<codemod>/``) run through the one runner,
``tests/test_codemod_goldens.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from patchkit.codemods import REGISTRY, CodemodOptionError, run_codemod

FIXTURES = Path(__file__).parent / "fixtures"


def _read(path: Path) -> str:
    return path.read_bytes().decode()  # no newline translation


@pytest.mark.parametrize(
    "name,options",
    [
        ("rope-static-cache", {}),
        ("rope-static-cache", {"max_positions": 0}),
        ("rope-static-cache", {"max_positions": 8, "cache_attrs": ["cos"]}),
        ("rope-static-cache", {"max_positions": 8, "colour": "red"}),
        ("cudagraph-step", {"function": "f"}),
        ("cudagraph-step", {"step_calls": ["decode_s1"]}),
        ("contiguous-step-inputs", {"function": "f", "calls": ["g"], "args": [-1]}),
        ("contiguous-step-inputs", {"function": "f", "calls": [], "args": [0]}),
    ],
)
def test_bad_options(name: str, options: dict) -> None:
    with pytest.raises(CodemodOptionError):
        run_codemod(REGISTRY[name], "x = 1\n", options=options)


# -- behaviour of rope-static-cache on its golden case -------------------------------------------

def _load(path: Path) -> dict:
    namespace: dict = {}
    exec(compile(_read(path), str(path), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def rope_pair():
    folder = FIXTURES / "rope-static-cache"
    return _load(folder / "basic.in.py")["RotaryPositionalEmbedding"], _load(folder / "basic.out.py")["RotaryPositionalEmbedding"]


DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _pair(before_cls, after_cls, dim=8):
    torch.manual_seed(0)
    before = before_cls(dim)
    after = after_cls(dim)
    after.load_state_dict(before.state_dict(), strict=True)  # same checkpoint keys: nothing added
    return before, after


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_eager_is_upstream_in_every_dtype(rope_pair, dtype) -> None:
    """Eager runs upstream's cache method unchanged: after .to(dtype), across lengths past 256
    (where bf16 rounds positions) and with a conversion after the first call (upstream then
    serves its stale table; so does the patched module)."""
    before, after = _pair(*rope_pair)
    for length, convert in ((5, False), (300, True), (7, False), (300, False), (2100, False)):
        if convert:
            before, after = before.to(dtype), after.to(dtype)
        q = torch.randn(1, 2, length, 8).to(dtype)
        k = torch.randn(1, 2, length, 8).to(dtype)
        for a, b in zip(before(q, k), after(q, k)):
            assert a.dtype == b.dtype and torch.equal(a, b), (dtype, length)
        assert after.seq_len_cached == before.seq_len_cached == length


def test_rope_meta_device_init_then_load_state_dict(rope_pair) -> None:
    """A model built on the meta device (init_empty_weights), materialised, then loaded: upstream
    recomputes its table on first use; so must the patched module (a table built at __init__ would
    stay empty)."""
    before_cls, after_cls = rope_pair
    reference = before_cls(8)
    with torch.device("meta"):
        after = after_cls(8)
    after = after.to_empty(device="cpu")
    after.load_state_dict(reference.state_dict(), strict=True)
    q, k = torch.randn(1, 2, 40, 8), torch.randn(1, 2, 40, 8)
    for a, b in zip(reference(q, k), after(q, k)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_compiled_matches_a_fresh_upstream_table(rope_pair, dtype) -> None:
    """Compiled code computes the table per call in the module's dtype: what upstream computes on a
    cache miss, and it writes no module state."""
    import torch._dynamo

    before_cls, after_cls = rope_pair
    torch._dynamo.reset()
    _, after = _pair(before_cls, after_cls)
    after = after.to(dtype)
    compiled = torch.compile(after, backend="eager", fullgraph=True, dynamic=True)
    for length in (3, 300, 9):
        fresh = before_cls(8).to(dtype)  # an upstream module that has never cached: a cache miss
        fresh.load_state_dict(after.state_dict())
        q = torch.randn(1, 2, length, 8).to(dtype)
        k = torch.randn(1, 2, length, 8).to(dtype)
        for a, b in zip(fresh(q, k), compiled(q, k)):
            assert torch.equal(a, b), (dtype, length)
    assert after.seq_len_cached is None and after.cos_cached is None, "compiled code wrote module state"


def test_rope_compiles_once_for_growing_lengths(rope_pair) -> None:
    _, after_cls = rope_pair
    import torch._dynamo

    torch._dynamo.reset()
    module = after_cls(8)
    compiled = torch.compile(module, backend="eager", dynamic=True, fullgraph=True)
    compiled(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8))
    with torch.compiler.set_stance("fail_on_recompile"):
        for length in range(4, 30):
            compiled(torch.randn(1, 2, length, 8), torch.randn(1, 2, length, 8))


def test_rope_upstream_shape_recompiles_per_length(rope_pair) -> None:
    before_cls, _ = rope_pair
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(before_cls(8), backend="eager", dynamic=True, fullgraph=True)
    compiled(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8))
    with pytest.raises(Exception, match="(?i)recompil"):
        with torch.compiler.set_stance("fail_on_recompile"):
            compiled(torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8))


def test_cudagraph_step_is_harmless_in_eager() -> None:
    folder = FIXTURES / "cudagraph-step"
    before = _load(folder / "basic.in.py")["auto_regressive_inference"]
    after = _load(folder / "basic.out.py")["auto_regressive_inference"]

    class Model:
        def __init__(self):
            torch.manual_seed(0)
            self.w1 = torch.randn(1, 16)
            self.w2 = torch.randn(1, 16)

        def decode_s1(self, window):
            h = window.float().unsqueeze(-1) * self.w1
            return h, h.tanh()

        def decode_s2(self, context, s1):
            return context + s1.float().unsqueeze(-1)

    tokens = torch.randint(0, 16, (2, 20))
    assert torch.equal(before(Model(), tokens, 6), after(Model(), tokens, 6))
