"""patchkit.runtime: the compile guard's fallback, recompile-limit, strict and counter behaviour, and assert_patched.

Each failure is induced for real (a backend that raises, a function that recompiles past a lowered
limit, a model error); Dynamo's ``eager`` backend keeps these fast.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from patchkit import runtime


def _double(x):
    return x * 2 + 1


class _Boom(Exception):
    pass


def _raising_backend(gm, example_inputs):
    raise _Boom("backend exploded")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_backend_failure_warns_once_and_runs_eager_from_then_on():
    fn = runtime.compile(lambda x: x.sin() + 1, backend=_raising_backend)
    x = torch.randn(4)
    with pytest.warns(runtime.CompileFallbackWarning, match="backend exploded"):
        out = fn(x)
    torch.testing.assert_close(out, x.sin() + 1, rtol=0, atol=0)
    assert fn.counters.fallbacks == 1 and fn.fallen_back is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        torch.testing.assert_close(fn(x * 3), (x * 3).sin() + 1, rtol=0, atol=0)
    assert fn.counters.as_dict()["fallbacks"] == 2 and fn.counters.calls == 2


def test_strict_turns_a_compiler_failure_into_an_error():
    fn = runtime.compile(lambda x: x.cos(), backend=_raising_backend, strict=True)
    with pytest.raises(runtime.CompileFailure, match="backend exploded"):
        fn(torch.randn(3))


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x):
        if x.shape[-1] != 4:
            raise ValueError(f"expected 4 features, got {x.shape[-1]}")
        return self.lin(x)


def test_model_error_propagates_unchanged_and_nothing_falls_back():
    model = _Model()
    fn = runtime.compile(model, backend="eager")
    torch.testing.assert_close(fn(torch.ones(2, 4)), model(torch.ones(2, 4)))
    assert fn.counters.graphs == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="expected 4 features, got 3"):
            fn(torch.randn(2, 3))
        # a bad shape the layer itself rejects: eager's RuntimeError, not a compiler error
        model.lin = torch.nn.Linear(5, 2)
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
            fn(torch.randn(2, 4))
    assert fn.counters.fallbacks == 0 and fn.fallen_back is None
    model.lin = torch.nn.Linear(4, 2)
    torch.testing.assert_close(fn(torch.ones(2, 4)), model(torch.ones(2, 4)))
    assert fn.lin is model.lin  # attributes reach the wrapped module


def test_keyboard_interrupt_propagates():
    def fn(x):
        raise KeyboardInterrupt

    guarded = runtime.compile(fn, backend="eager")
    with pytest.raises(KeyboardInterrupt):
        guarded(torch.randn(2))
    assert guarded.counters.fallbacks == 0


def _step(x, n):
    return x * n


def test_recompile_limit_is_loud_and_names_the_function_and_guard():
    guarded = runtime.compile(_step, backend="eager", dynamic=False)
    x = torch.randn(3)
    with torch._dynamo.config.patch(recompile_limit=2, automatic_dynamic_shapes=False):
        with pytest.warns(runtime.RecompileLimitWarning, match=r"_step hit torch._dynamo's recompile limit.*n == "):
            for n in range(1, 6):
                torch.testing.assert_close(guarded(x, n), x * n)
    assert guarded.counters.limit_hits >= 1
    assert guarded.counters.graphs == 2 and guarded.counters.recompiles == 1


def test_recompile_limit_strict_raises():
    guarded = runtime.compile(_step, backend="eager", dynamic=False, strict=True)
    x = torch.randn(3)
    with torch._dynamo.config.patch(recompile_limit=1, automatic_dynamic_shapes=False):
        guarded(x, 1)
        with pytest.raises(runtime.RecompileLimitHit, match="_step"):
            guarded(x, 2)


def test_strict_after_warmup_forbids_recompiles():
    guarded = runtime.compile(_double, backend="eager", dynamic=False, strict=True, warmup=1)
    guarded(torch.randn(3))
    guarded(torch.randn(3))  # same shape: no recompile, fine
    with pytest.raises(runtime.CompileFailure, match="_double"):
        guarded(torch.randn(7))  # a new shape after warm-up
    assert guarded.counters.calls == 3


def test_counters_count_graphs_and_recompiles():
    guarded = runtime.compile(_double, backend="eager", dynamic=False)
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        guarded(torch.randn(3))
        guarded(torch.randn(3))
        guarded(torch.randn(5))
    assert guarded.counters.as_dict() == {"calls": 3, "graphs": 2, "recompiles": 1, "fallbacks": 0,
                                          "limit_hits": 0}


def test_assert_patched_refuses_an_unpatched_package(monkeypatch, tmp_path):
    # an importable `toto` without patchkit's provenance: what a stray upstream install looks like
    pkg = tmp_path / "toto"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "toto", raising=False)
    with pytest.raises(runtime.NotPatched, match="not a patchkit build"):
        runtime.assert_patched("toto")
    (pkg / "_patchkit_provenance.json").write_text('{"patch_hash": "abc", "model": "toto"}')
    assert runtime.assert_patched("toto")["patch_hash"] == "abc"
    with pytest.raises(runtime.NotPatched, match="stale"):
        runtime.assert_patched("toto", patch_hash="def")


def test_the_runtime_modules_import_without_libcst_or_numpy():
    """A serving process that loads a package or a cache artifact pays for torch, not for patchkit's codemods
    (LibCST, about a second) or its reports (numpy)."""
    import subprocess
    import sys

    code = ("import sys; import patchkit.runtime, patchkit.aot, patchkit.compile_cache, patchkit.distribute; "
            "print(sorted(m for m in ('libcst', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
