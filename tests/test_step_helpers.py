"""The runtime helpers (``codemods/runtime_helpers.py``) that contiguous-step-inputs, dynamic-step-inputs and
pad-single-row make upstream modules import: run as the codemods write the calls, against eager and a compiled
callee (Dynamo's eager backend)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest
import torch
import torch._dynamo.testing

from patchkit.codemods import REGISTRY, run_codemod, runtime_helpers

_SOURCE = """
import torch
import torch._dynamo.testing


def step_call(model, x, ids, n):
    return model(x=x, ids=ids, n=n)
"""


def _helpers(codemod: str, options: dict) -> dict:
    """Namespace of the module ``codemod`` makes of ``_SOURCE``: the rewritten call and its helpers."""
    result = run_codemod(REGISTRY[codemod], _SOURCE, options={"function": "step_call", "calls": ["model"], **options})
    assert result.matches
    namespace: dict = {"__name__": f"patchkit_helpers_{codemod.replace('-', '_')}"}
    exec(compile(result.code, "<helpers>", "exec"), namespace)  # noqa: S102 - the codemod's own output
    return namespace


@dataclass
class _Out:
    preds: torch.Tensor
    rows_seen: int


class _RowWise(torch.nn.Module):
    """Each row's result depends on that row alone and on whether another row shares its id."""

    def forward(self, x, ids, n):
        shared = (ids[:, None] == ids[None, :]).sum(-1, keepdim=True).to(x.dtype)
        return _Out(x.cumsum(-1)[..., :n] * shared, x.shape[0])


def test_pad_single_row_leaves_an_eager_callee_alone():
    ns = _helpers("pad-single-row", {"rows": ["x"], "distinct": ["ids"], "outputs": ["preds"]})
    model = _RowWise()
    assert ns["_patchkit_pad_single_row"](model, ("x",)) is model  # eager: upstream's callee, untouched
    out = ns["step_call"](model, torch.ones(1, 5), torch.zeros(1, dtype=torch.long), 3)
    assert out.rows_seen == 1


def test_pad_single_row_runs_a_compiled_callee_on_two_rows_and_keeps_the_first():
    ns = _helpers("pad-single-row", {"rows": ["x"], "distinct": ["ids"], "outputs": ["preds"]})
    model = _RowWise()
    compiled = torch.compile(model, backend="eager", dynamic=None)
    x, ids = torch.arange(5.0)[None], torch.zeros(1, dtype=torch.long)
    torch._dynamo.maybe_mark_dynamic(x, 1)
    got = ns["step_call"](compiled, x, ids, 3)
    want = model(x=x, ids=ids, n=3)
    assert got.rows_seen == 2  # the callee saw the row and its copy
    assert got.preds.shape == want.preds.shape == (1, 3)
    torch.testing.assert_close(got.preds, want.preds, rtol=0, atol=0)  # the copy is a group of its own
    batch = ns["step_call"](compiled, torch.ones(3, 5), torch.arange(3), 2)
    assert batch.rows_seen == 3 and batch.preds.shape == (3, 2)  # more rows: called as is


def test_pad_single_row_runs_a_call_without_its_distinct_ids_as_is():
    """Without ids the copy would join the row's group and change it: such a call is not padded."""
    ns = _helpers("pad-single-row", {"rows": ["x"], "distinct": ["ids"], "outputs": ["preds"]})
    model = _RowWise()

    def grouped(x, ids, n):  # None ids: every row in one group, as a model might default them
        return model(x=x, ids=torch.zeros(x.shape[0], dtype=torch.long) if ids is None else ids, n=n)

    compiled = torch.compile(grouped, backend="eager", dynamic=None)
    x = torch.arange(5.0)[None]
    got = ns["step_call"](compiled, x, None, 3)
    assert got.rows_seen == 1  # not padded
    torch.testing.assert_close(got.preds, grouped(x, None, 3).preds, rtol=0, atol=0)
    padded = ns["step_call"](compiled, x, torch.zeros(1, dtype=torch.long), 3)
    assert padded.rows_seen == 2  # with its ids the same call is padded


def test_pad_single_row_carries_dynamic_marks_to_the_copy():
    ns = _helpers("pad-single-row", {"rows": ["x"]})
    seen = {}

    def step(x, ids, n):
        seen["marks"] = set(getattr(x, "_dynamo_weak_dynamic_indices", set()))
        return x[:, :n]

    compiled = torch.compile(step, backend="eager")
    x = torch.ones(1, 7)
    torch._dynamo.maybe_mark_dynamic(x, 1)
    out = ns["step_call"](compiled, x, None, 4)
    assert out.shape == (1, 4)
    assert seen["marks"] == {1}  # the two-row tensor Dynamo traced kept the length mark


def test_contiguous_gives_canonical_strides_and_keeps_canonical_tensors():
    ns = _helpers("contiguous-step-inputs", {"keywords": ["x"]})
    canon = ns["_patchkit_contiguous"]
    wide = torch.arange(12.0).reshape(1, 12)
    one_row = wide[:, :5]
    assert one_row.is_contiguous() and one_row.stride() == (12, 1)  # what .contiguous() would keep
    fixed = canon(one_row)
    assert fixed.stride() == (5, 1) and torch.equal(fixed, one_row)
    fresh = torch.zeros(3, 4)
    assert canon(fresh) is fresh  # already canonical: the same tensor, no copy
    view = torch.zeros(4, 6)[:, :3]
    assert canon(view).stride() == (3, 1) and canon(view).data_ptr() != view.data_ptr()


def test_dynamic_int_only_for_a_compiled_callee():
    ns = _helpers("dynamic-step-inputs", {"keywords": {"x": [0]}, "ints": ["n"]})
    from torch.fx.experimental.sym_node import DynamicInt

    model = _RowWise()
    plain = ns["_patchkit_dynamic_int"](model, 4)
    assert type(plain) is int and plain == 4
    compiled = torch.compile(model, backend="eager")
    wrapped = ns["_patchkit_dynamic_int"](compiled, 4)
    assert isinstance(wrapped, DynamicInt) and wrapped == 4
    model.compile(backend="eager")  # compiled in place: nn.Module.compile
    assert isinstance(ns["_patchkit_dynamic_int"](model, 4), DynamicInt)


def test_is_compiled_is_false_before_dynamo_is_loaded(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch._dynamo")
    assert runtime_helpers._patchkit_is_compiled(torch.compile(_RowWise(), backend="eager")) is False


def test_one_graph_for_one_row_and_many_rows():
    """The whole point: with the three codemods' helpers, a compiled callee fed 1, 3 and 1 rows of varied length
    and int n compiles one graph."""
    opts = {"function": "step_call", "calls": ["model"]}
    src = _SOURCE
    for codemod, extra in (("contiguous-step-inputs", {"keywords": ["x"]}),
                           ("dynamic-step-inputs", {"keywords": {"x": [0, 1], "ids": [0]}, "ints": ["n"]}),
                           ("pad-single-row", {"rows": ["x"], "distinct": ["ids"], "outputs": ["preds"]})):
        src = run_codemod(REGISTRY[codemod], src, options={**opts, **extra}).code
    ns: dict = {"__name__": "patchkit_helpers_all"}
    exec(compile(src, "<helpers>", "exec"), ns)  # noqa: S102
    plain: dict = {"__name__": "patchkit_helpers_none"}
    exec(compile(_SOURCE, "<plain>", "exec"), plain)  # noqa: S102
    graphs = {}
    for name, namespace in (("plain", plain), ("patched", ns)):
        torch._dynamo.reset()
        counter = torch._dynamo.testing.CompileCounter()
        model = _RowWise()
        compiled = torch.compile(model, backend=counter)
        for rows, length, n in ((1, 40, 3), (3, 50, 5), (1, 64, 7), (4, 33, 2)):
            x = torch.randn(rows, 80)[:, :length]
            got = namespace["step_call"](compiled, x, torch.arange(rows), n)
            torch.testing.assert_close(got.preds, model(x=x, ids=torch.arange(rows), n=n).preds)
        graphs[name] = counter.frame_count
    assert graphs["patched"] == 1 < graphs["plain"], graphs


def test_pad_single_row_gated_on_the_compiled_module_and_skipped_when_rows_are_multiplied():
    ns = _helpers("pad-single-row", {"rows": ["x"], "factors": ["repeat"], "gate": "model"})
    pad = ns["_patchkit_pad_single_row"]
    seen = []

    def generate(x, repeat):  # eager code that hands `repeat` copies of each row to a compiled module
        seen.append(x.shape[0] * repeat)
        return x * 2

    eager_module, compiled_module = _RowWise(), torch.compile(_RowWise(), backend="eager")
    x = torch.arange(4.0)[None]
    assert pad(generate, ("x",), factors=("repeat",), compiled=eager_module) is generate
    out = pad(generate, ("x",), factors=("repeat",), compiled=compiled_module)(x=x, repeat=1)
    assert seen[-1] == 2 and torch.equal(out, x * 2)  # one row, one copy each: padded to two
    out = pad(generate, ("x",), factors=("repeat",), compiled=compiled_module)(x=x, repeat=3)
    assert seen[-1] == 3 and torch.equal(out, x * 2)  # three rows reach the module already: as is


def test_eager_when_leaves_eager_calls_alone_and_runs_matching_compiled_calls_without_a_graph():
    ns = _helpers("eager-when", {"when": "x.shape[-1] <= 8"})
    route = ns["_patchkit_eager_when"]
    model = _RowWise()

    def never():
        raise AssertionError("an eager callee must not evaluate `when`")

    assert route(model, never) is model  # eager: upstream's callee, the condition never evaluated
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(_RowWise(), backend=counter)
    ids = torch.arange(2)
    from torch._dynamo.utils import counters

    counters["patchkit"].clear()
    graphs = []
    for length in (40, 8, 33, 5):
        x = torch.randn(2, length)
        got = ns["step_call"](compiled, x, ids, 3)
        assert torch.equal(got.preds, model(x=x, ids=ids, n=3).preds)
        graphs.append(counter.frame_count)
    # 40 compiles a graph and 33 a second (static at first, then dynamic); 8 and 5 match `when`: none
    assert graphs == [1, 1, 2, 2]
    assert counters["patchkit"]["eager_when"] == 2  # counted, so verify can report them


def test_eager_when_gated_on_the_compiled_module():
    ns = _helpers("eager-when", {"when": "x.shape[-1] <= 8", "gate": "model"})
    route = ns["_patchkit_eager_when"]
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(_RowWise(), backend=counter)

    def generate(x):  # eager code around the compiled module
        return compiled(x=x, ids=torch.arange(x.shape[0]), n=2)

    assert route(generate, lambda: True, compiled=_RowWise()) is generate
    route(generate, lambda: True, compiled=compiled)(torch.randn(2, 4))
    assert counter.frame_count == 0  # matched: the compiled module ran its eager code
    route(generate, lambda: False, compiled=compiled)(torch.randn(2, 40))
    assert counter.frame_count == 1


def test_eager_when_refuses_a_missing_or_broken_condition():
    from patchkit.codemods.base import CodemodOptionError

    for when in (None, "x.shape[", 3):
        with pytest.raises(CodemodOptionError, match="when must be an expression"):
            run_codemod(REGISTRY["eager-when"], _SOURCE,
                        options={"function": "step_call", "calls": ["model"], "when": when})
