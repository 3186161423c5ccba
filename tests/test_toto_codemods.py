"""Golden and behaviour tests for the codemods of the Toto patch set.

Golden cases live in ``tests/fixtures/<codemod-name>/`` and run through the one
runner, ``tests/test_codemod_goldens.py``; this module holds behaviour tests.

The chain tests run the whole codemod sequence of ``patches/toto/`` over a
small decoder of the same shape (``tests/toto_chain/mini_decoder.py``) and
check eager equivalence, the eager error, and a compile with no graph break
and no recompile across decode steps and horizons.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from patchkit.codemods import REGISTRY, run_codemod

FIXTURES = Path(__file__).parent / "fixtures"
CHAIN = Path(__file__).parent / "toto_chain"


def _options(src: Path) -> dict:
    opts = src.with_name(src.name.replace(".in.py", ".options.json"))
    return json.loads(opts.read_text()) if opts.exists() else {}


def test_item_scalar_warns_on_mutated_table() -> None:
    src = FIXTURES / "item-scalar" / "untouched_mutated_table.in.py"
    from libcst.codemod import CodemodContext

    cls = REGISTRY["item-scalar"]
    import libcst as cst

    ctx = CodemodContext()
    cls(ctx, **_options(src)).transform_module(cst.parse_module(src.read_text()))
    assert any("shuffle" in w for w in ctx.warnings)


def test_options_are_checked() -> None:
    from patchkit.codemods import CodemodOptionError

    with pytest.raises(CodemodOptionError):
        run_codemod(REGISTRY["item-scalar"], "x = 1\n", options={})
    with pytest.raises(CodemodOptionError):
        run_codemod(REGISTRY["static-kv-cache"], "x = 1\n", options={})
    with pytest.raises(CodemodOptionError):
        run_codemod(REGISTRY["mark-growing-dynamic"], "x = 1\n", options={"bogus": 1})


# -- chain: the patch set's sequence on a decoder of the same shape ----------------

CHAIN_STEPS = (
    ("item-scalar", {"tables": ["_slot_table"], "class_name": "StepCache"}),
    (
        "static-kv-cache",
        {"class_name": "StepCache", "keys_attr": "_keys", "values_attr": "_values",
         "index_attr": "_filled", "max_len_attr": "max_len", "init_method": "__post_init__",
         "append_method": "append", "reset_method": "reset"},
    ),
    ("kv-cache-callsites", {"receivers": ["kv_cache"], "renames": {"seq_len": "seq_pos"},
                            "subscript_method": "read_full"}),
    ("offset-causal-mask", {}),
    ("decode-prefix-slice", {"receivers": ["kv_cache"], "empty_method": "is_empty",
                             "prefix_tensor": "torch.clamp(self.step * kv_cache._filled[0], min=0)"}),
    ("mark-growing-dynamic", {"calls": ["model"]}),
)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    torch = pytest.importorskip("torch")
    code = (CHAIN / "mini_decoder.py").read_text()
    for name, options in CHAIN_STEPS:
        result = run_codemod(REGISTRY[name], code, options=options)
        assert result.matches, f"{name} matched nothing in the mini decoder"
        code = result.code
    out = tmp_path_factory.mktemp("chain") / "mini_decoder_patched.py"
    out.write_text(code)
    original = _load(CHAIN / "mini_decoder.py", "toto_chain_original")
    patched = _load(out, "toto_chain_patched")
    torch.manual_seed(0)
    before = original.TinyDecoder().eval()
    after = patched.TinyDecoder().eval()
    after.load_state_dict(before.state_dict())
    series = torch.randn(3, 32, generator=torch.Generator().manual_seed(1)).cumsum(-1)
    return torch, original, patched, before, after, series


def test_chain_is_idempotent() -> None:
    code = (CHAIN / "mini_decoder.py").read_text()
    for name, options in CHAIN_STEPS:
        code = run_codemod(REGISTRY[name], code, options=options).code
    for name, options in CHAIN_STEPS:
        again = run_codemod(REGISTRY[name], code, options=options)
        assert again.code == code and not again.matches and again.already, name


def test_chain_eager_forecasts_unchanged(chain) -> None:
    torch, original, patched, before, after, series = chain
    with torch.no_grad():
        for horizon in (24, 16):
            want = original.forecast(before, series, horizon)
            got = patched.forecast(after, series, horizon)
            # eager runs upstream's own reads (host offsets, K/V sliced to the filled length): bit for bit
            assert torch.equal(got, want), float((got - want).abs().max())
        torch.testing.assert_close(
            patched.forecast(after, series, 24, use_cache=False), original.forecast(before, series, 24, use_cache=False)
        )


def test_chain_eager_overflow_error_unchanged(chain) -> None:
    torch, original, patched, before, after, series = chain
    messages = []
    for module, model in ((original, before), (patched, after)):
        cache = model.allocate(series.shape[0], series.shape[-1])  # no room for a decode step
        with torch.no_grad(), pytest.raises(AssertionError) as err:
            model(series, cache)
            model(torch.cat([series, series[:, -4:]], dim=-1), cache)
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "cache overflow" in messages[0]


def test_chain_compiles_without_breaks_or_recompiles(chain) -> None:
    torch, original, patched, before, after, series = chain
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(after, fullgraph=True)
    try:
        with torch.no_grad():
            first = patched.forecast(compiled, series, 24)  # warm-up: prefill graph + decode graph
            # every later decode step and another horizon must reuse those two graphs
            with torch.compiler.set_stance("fail_on_recompile"):
                second = patched.forecast(compiled, series, 16)
                third = patched.forecast(compiled, series, 24)
            eager = patched.forecast(after, series, 16)
        assert counters["stats"]["unique_graphs"] == 2
        assert sum(counters["graph_break"].values()) == 0
        torch.testing.assert_close(second, eager, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(third, first)
        # upstream asserts that decode feeds one patch at a time; compiled code derives the prefix from
        # shapes, so without the device-side check two new patches would silently lose one
        cache = after.allocate(series.shape[0], series.shape[-1] + 8)
        with torch.no_grad():
            compiled(series, cache)
            with pytest.raises(RuntimeError, match="exactly one new step"):
                compiled(torch.cat([series, series[:, -8:]], dim=-1), cache)
            with pytest.raises(AssertionError, match="one patch at a time"):  # eager: upstream's own error
                cache.reset()
                after(series, cache)
                after(torch.cat([series, series[:, -8:]], dim=-1), cache)
    finally:
        torch._dynamo.reset()


# -- offset-causal-mask: upstream's attention for every call pattern, not only one-patch decode ------------

ATTEND_SRC = """
import torch
import torch.nn.functional as F


def attend(q, k, v, mask, offset):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=(mask is None and offset == 0))
"""


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
@pytest.mark.parametrize("offset,steps", [(0, 1), (0, 3), (5, 1), (5, 3)])
def test_offset_causal_mask_matches_upstream_attention(mask_kind: str, offset: int, steps: int, tmp_path) -> None:
    """A tensor offset over the whole buffer attends as upstream's call over the filled keys: causal at offset 0,
    the whole chunk (upstream's is_causal=False) past it, and a passed mask kept; an int offset is upstream's call."""
    torch = pytest.importorskip("torch")
    result = run_codemod(REGISTRY["offset-causal-mask"], ATTEND_SRC, options={})
    assert result.matches
    (tmp_path / "attend_up.py").write_text(ATTEND_SRC)
    (tmp_path / "attend_pk.py").write_text(result.code)
    up = _load(tmp_path / "attend_up.py", "attend_up").attend
    pk = _load(tmp_path / "attend_pk.py", "attend_pk").attend
    g = torch.Generator().manual_seed(offset * 10 + steps)
    buffer_len, filled = 12, offset + steps
    q = torch.randn(2, 3, steps, 8, generator=g)
    k_buf = torch.randn(2, 3, buffer_len, 8, generator=g)
    v_buf = torch.randn(2, 3, buffer_len, 8, generator=g)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(steps, filled, generator=g) > 0.3
        mask[:, 0] = True  # every query sees at least one key
    elif mask_kind == "float":
        mask = torch.randn(steps, filled, generator=g)
    want = up(q, k_buf[..., :filled, :], v_buf[..., :filled, :], mask, offset)
    torch.testing.assert_close(pk(q, k_buf, v_buf, mask, torch.tensor(offset)), want, rtol=1e-5, atol=1e-6)
    # an int offset over the filled keys is upstream's call, bit for bit
    assert torch.equal(pk(q, k_buf[..., :filled, :], v_buf[..., :filled, :], mask, offset), want)


# -- item-scalar: upstream's value in eager and compiled, for any table dtype and late writes ---------------

FLOAT_TABLE_SRC = """
import torch


class Scales:
    def __init__(self):
        self._table = torch.tensor([0.0, 1.7, 2.5])

    def whole(self, i):
        return int(self._table[i].item())

    def raw(self, i):
        return self._table[i].item()
"""


def test_item_scalar_keeps_upstream_values(tmp_path) -> None:
    """int() of a float table still truncates; eager reads the live tensor (a table written after construction,
    e.g. by load_state_dict, reads as upstream); compiled reads the host copy with upstream's conversion."""
    torch = pytest.importorskip("torch")
    result = run_codemod(REGISTRY["item-scalar"], FLOAT_TABLE_SRC, options={"tables": ["_table"]})
    assert len(result.matches) == 2
    (tmp_path / "scales_up.py").write_text(FLOAT_TABLE_SRC)
    (tmp_path / "scales_pk.py").write_text(result.code)
    up = _load(tmp_path / "scales_up.py", "scales_up").Scales()
    pk = _load(tmp_path / "scales_pk.py", "scales_pk").Scales()
    for i in range(3):
        assert pk.whole(i) == up.whole(i) and type(pk.whole(i)) is int
        assert pk.raw(i) == up.raw(i)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(lambda x: x * pk.whole(1) + pk.raw(2), backend="eager", fullgraph=True)
        assert torch.equal(compiled(torch.ones(2)), torch.ones(2) * up.whole(1) + up.raw(2))
    finally:
        torch._dynamo.reset()
    up._table[1] = 4.2  # written from outside the class after construction
    pk._table[1] = 4.2
    assert pk.whole(1) == up.whole(1) == 4


def test_decode_prefix_slice_warns_without_prefix_tensor() -> None:
    """Without the patch set's prefix expression the rewrite still removes the break, but a multi-step
    decode is no longer caught under compile: the codemod says so."""
    import libcst as cst
    from libcst.codemod import CodemodContext

    src = (FIXTURES / "decode-prefix-slice" / "prefix_from_cache.in.py").read_text()
    ctx = CodemodContext()
    out = REGISTRY["decode-prefix-slice"](ctx, receivers=["kv_cache"]).transform_module(cst.parse_module(src)).code
    assert "torch._assert_async" not in out and "is_empty()" in out
    assert any("not caught" in w for w in ctx.warnings)
