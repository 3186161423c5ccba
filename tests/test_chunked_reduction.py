"""chunked-reduction against upstream behaviour: the rewritten normaliser, run as the codemod writes it, is
upstream's code in eager, and compiled with inductor it makes one graph for histories on both sides of 4096
where upstream's makes two."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing

from patchkit.codemods import REGISTRY, run_codemod

# a normaliser in the shape of a forecasting model's instance norm (our own code)
_SOURCE = """
import torch


class InstanceNorm(torch.nn.Module):
    def forward(self, x):
        loc = torch.nan_to_num(torch.nanmean(x, dim=-1, keepdim=True), nan=0.0)
        scale = torch.nan_to_num((x - loc).square().nanmean(dim=-1, keepdim=True).sqrt(), nan=1.0)
        level = x.mean(-1)
        total = torch.sum(x, dim=-1, keepdim=False)
        return (x - loc) / scale, level, total
"""


def _namespace(source: str, name: str) -> dict:
    namespace: dict = {"__name__": name}
    exec(compile(source, f"<{name}>", "exec"), namespace)  # noqa: S102 - our fixture and the codemod's output
    return namespace


def _rewritten() -> str:
    result = run_codemod(REGISTRY["chunked-reduction"], _SOURCE,
                         options={"function": "forward", "class_name": "InstanceNorm"})
    assert len(result.matches) == 4
    return result.code


def _classes() -> tuple[type, type]:
    return (_namespace(_SOURCE, "upstream_norm")["InstanceNorm"],
            _namespace(_rewritten(), "patched_norm")["InstanceNorm"])


def _inputs(length: int, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(length)
    x = (100.0 + torch.randn(4, length, generator=gen, dtype=torch.float64).cumsum(-1)).to(dtype)
    x[1, 3:9] = float("nan")
    x[2] = float("nan")  # an all-NaN row: NaN mean, nan_to_num'd loc
    return x


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_eager_is_upstream(dtype):
    upstream, patched = _classes()
    for length in (1, 17, 4096, 5000):
        for a, b in zip(upstream()(_inputs(length, dtype)), patched()(_inputs(length, dtype))):
            assert _same(a, b)


def test_eager_raises_what_upstream_raises():
    upstream, patched = _classes()
    x = torch.arange(12).reshape(3, 4)  # integer input: torch.nanmean refuses it
    with pytest.raises(RuntimeError) as up:
        upstream()(x)
    with pytest.raises(RuntimeError) as ours:
        patched()(x)
    assert str(ours.value) == str(up.value)


@pytest.mark.parametrize("reduction", ["sum", "nansum", "mean", "nanmean"])
def test_helper_matches_the_torch_reduction(reduction):
    helper = _namespace(_rewritten(), "helpers")["_patchkit_chunked_reduce"]
    for length in (1, 255, 256, 257, 4097, 9000):
        for dim, keepdim, dtype in ((-1, True, torch.float32), (2, False, torch.float32), (0, True, torch.float32),
                                    (-1, False, torch.bfloat16), (-1, True, torch.float64)):
            x = _inputs(length, dtype)
            x = x[None].expand(2, *x.shape).movedim(-1, 0) if dim == 0 else x[:, None] if dim == 2 else x
            d = dim if dim != 2 else -1
            expected = getattr(torch, reduction)(x, dim=d, keepdim=keepdim)
            got = helper(reduction, x, d, keepdim=keepdim)
            assert got.shape == expected.shape and got.dtype == expected.dtype
            assert torch.equal(got.isnan(), expected.isnan())
            tol = 1e-2 if dtype == torch.bfloat16 else 1e-6  # bfloat16: both round the float32 total to 8 bits
            torch.testing.assert_close(got.nan_to_num(), expected.nan_to_num(), rtol=tol, atol=0.0)
    # what it cannot chunk runs the torch reduction itself
    ints = torch.arange(10).reshape(2, 5)
    assert torch.equal(helper("sum", ints, -1), ints.sum(-1))
    assert torch.equal(helper(reduction, torch.tensor(3.0), 0), getattr(torch, reduction)(torch.tensor(3.0), dim=0))


def _graphs(cls: type, lengths) -> tuple[int, list[tuple[torch.Tensor, ...]]]:
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    model = torch.compile(cls(), backend=counter)
    outs = []
    for length in lengths:
        x = _inputs(length)
        torch._dynamo.mark_dynamic(x, 0)
        torch._dynamo.mark_dynamic(x, 1)
        with torch.no_grad():
            outs.append(model(x))
    return counter.frame_count, outs


@pytest.mark.slow
def test_one_inductor_graph_across_4096_where_upstream_compiles_two():
    upstream, patched = _classes()
    lengths = (100, 3000, 5000, 8192, 256)
    before, _ = _graphs(upstream, lengths)
    after, outs = _graphs(patched, lengths)
    assert before == 2  # the hazard: inductor's cascade-sum switch at 4096 elements splits the graph
    assert after == 1
    for length, compiled in zip(lengths, outs):
        eager = upstream()(_inputs(length))
        for a, b in zip(compiled, eager):
            assert torch.equal(a.isnan(), b.isnan())
            torch.testing.assert_close(a.nan_to_num(), b.nan_to_num(), rtol=1e-5, atol=1e-5)
