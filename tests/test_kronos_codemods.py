"""Golden and behaviour tests for the codemods the Kronos patch set uses.

Fixtures: ``tests/fixtures/<codemod>/<case>.in.py`` with ``<case>.out.py``;
``untouched_*.in.py`` has no ``.out.py`` and must come out byte-identical.
Options come from ``options.json`` in the folder, or ``<case>.options.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from patchkit.codemods import REGISTRY, CodemodOptionError, run_codemod

FIXTURES = Path(__file__).parent / "fixtures"
CODEMODS = ("rope-static-cache", "cudagraph-step", "contiguous-step-inputs")


def _options(folder: Path, case: str) -> dict:
    own = folder / f"{case}.options.json"
    return json.loads((own if own.exists() else folder / "options.json").read_text())


def _cases():
    for name in CODEMODS:
        folder = FIXTURES / name
        for path in sorted(folder.glob("*.in.py")):
            case = path.name[: -len(".in.py")]
            yield pytest.param(name, folder, case, id=f"{name}/{case}")


def _read(path: Path) -> str:
    return path.read_bytes().decode()  # no newline translation


@pytest.mark.parametrize("name,folder,case", list(_cases()))
def test_golden(name: str, folder: Path, case: str) -> None:
    source = _read(folder / f"{case}.in.py")
    result = run_codemod(REGISTRY[name], source, options=_options(folder, case))
    if case.startswith("untouched_"):
        assert not (folder / f"{case}.out.py").exists()
        assert result.code == source
        assert not result.changed and not result.matches
        return
    assert result.code == _read(folder / f"{case}.out.py")
    assert result.matches and all(site.line > 0 for site in result.matches)


@pytest.mark.parametrize("name,folder,case", [c for c in _cases() if not c.values[2].startswith("untouched_")])
def test_idempotent(name: str, folder: Path, case: str) -> None:
    fixed = _read(folder / f"{case}.out.py")
    again = run_codemod(REGISTRY[name], fixed, options=_options(folder, case))
    assert again.code == fixed
    assert not again.matches
    assert again.already, "an already-fixed site must be reported as such"


@pytest.mark.parametrize("name", CODEMODS)
def test_crlf_kept(name: str) -> None:
    crlf = [p for p in (FIXTURES / name).glob("*crlf*.out.py")]
    assert crlf, f"{name} needs a CRLF golden case"
    for path in crlf:
        text = _read(path)
        assert text.count("\r\n") == text.count("\n") > 0
        assert "\r\n" in _read(path.with_name(path.name.replace(".out.py", ".in.py")))


def test_contract_fields() -> None:
    for name in CODEMODS:
        cls = REGISTRY[name]
        assert cls.NAME == name and cls.DESCRIPTION and cls.LOOKS_FOR and cls.__doc__
        assert "Hazard" in cls.__doc__


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


def test_rope_same_values_and_fallback(rope_pair) -> None:
    before_cls, after_cls = rope_pair
    before, after = before_cls(8), after_cls(8)
    for length in (1, 5, 64, 65, 100, 7):  # table holds 64: 65 and 100 take the uncached path
        q = torch.randn(2, 2, length, 8)
        k = torch.randn(2, 2, length, 8)
        attrs = dict(vars(after))
        for a, b in zip(before(q, k), after(q, k)):
            assert torch.equal(a, b), length
        assert vars(after).keys() == attrs.keys()
        assert all(vars(after)[key] is value for key, value in attrs.items()), "forward wrote module state"


def test_rope_checkpoints_still_load(rope_pair) -> None:
    before_cls, after_cls = rope_pair
    before, after = before_cls(8), after_cls(8)
    assert set(before.state_dict()) == set(after.state_dict())  # the table is not persistent
    after.load_state_dict(before.state_dict(), strict=True)
    moved = after.to(torch.float64)
    assert moved.cos_static.dtype == torch.float64


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
