"""Every codemod over variants of its golden inputs whose operands are expressions, not bare names.

For each rewriting golden case, ``OperandVariants`` replaces bare-name operands by an expression of the same
value (``x * 1``, ``x if True else x``, ``[x][0]``, ``(lambda t: t)(x)``), parenthesised only where the grammar
needs it, so a codemod that splices an operand's source into a tighter context changes the code's meaning.
The codemod's output must parse.  A case that ships ``<case>.run.py`` is also executed: its ``run(ns)`` builds
small CPU tensors, calls into the module namespace ``ns`` and returns values; the variant input and the
codemod's output, both run eagerly, must return exactly the same.  With ``AS_COMPILED = True`` in the run file
the output runs a second time with ``torch.compiler.is_compiling()`` true, so the compiled-only branches the
codemod wrote run too (still eagerly, no torch.compile).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from unittest import mock

import libcst as cst
import pytest
import torch

from patchkit.codemods import REGISTRY, run_codemod
from patchkit.codemods.base import ATOM, parenthesize

from .test_codemod_goldens import CASES, _options, _read

#: expressions equal to the operand ``{x}``
WRAPPERS = {
    "times_one": "{x} * 1",
    "conditional": "{x} if True else {x}",
    "subscript": "[{x}][0]",
    "call": "(lambda t: t)({x})",
}
#: names never replaced: the receiver, constants, and names bound by imports or definitions (found per module)
_KEEP = {"self", "cls", "None", "True", "False", "super", "int", "float", "len", "range", "max", "min", "isinstance"}


class _Bound(cst.CSTVisitor):
    """Names a module binds by import, def or class: modules and callables, not operands."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
        alias = node.asname.name if node.asname else node.name
        self.names.add(cst.Module([]).code_for_node(alias).split(".")[0])

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.names.add(node.name.value)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.names.add(node.name.value)


class OperandVariants(cst.CSTTransformer):
    """Replace each bare-name operand (read, not written; not a callee, a module or ``self``) by ``template``
    with the name in it, bare where any expression may stand (an argument, an assigned value, a returned
    value) and parenthesised elsewhere."""

    def __init__(self, template: str, keep: set[str]) -> None:
        self.template = template
        self.keep = keep
        self.skip: set[int] = set()  # ids of Name nodes that are not operands
        self.loose: set[int] = set()  # ids of Name nodes where a bare expression is allowed
        self.count = 0

    def _skip(self, node: cst.CSTNode | None) -> None:
        if node is not None:
            for name in _names(node):
                self.skip.add(id(name))

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self.skip.add(id(node.attr))

    def visit_Call(self, node: cst.Call) -> None:
        if isinstance(node.func, cst.Name):
            self._skip(node.func)

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self.skip.add(id(node.keyword))
        if isinstance(node.value, cst.Name) and not node.star:
            self.loose.add(id(node.value))

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self._skip(node.target)

    def visit_Assign(self, node: cst.Assign) -> None:
        if isinstance(node.value, cst.Name):
            self.loose.add(id(node.value))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._skip(node.target)
        self._skip(node.annotation)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._skip(node.target)

    def visit_Return(self, node: cst.Return) -> None:
        if isinstance(node.value, cst.Name):
            self.loose.add(id(node.value))

    def visit_For(self, node: cst.For) -> None:
        self._skip(node.target)

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self._skip(node.target)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._skip(node.target)

    def visit_Param(self, node: cst.Param) -> None:
        self._skip(node.name)
        self._skip(node.annotation)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._skip(node.name)
        self._skip(node.returns)
        for deco in node.decorators:
            self._skip(deco)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._skip(node.name)
        for base in node.bases:
            self._skip(base)
        for deco in node.decorators:
            self._skip(deco)

    def visit_Import(self, node: cst.Import) -> bool:
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        return False

    def visit_Global(self, node: cst.Global) -> bool:
        return False

    def visit_Nonlocal(self, node: cst.Nonlocal) -> bool:
        return False

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.BaseExpression:
        if id(original_node) in self.skip or original_node.value in self.keep:
            return updated_node
        self.count += 1
        expr = cst.helpers.parse_template_expression(self.template, x=updated_node.with_changes(lpar=[], rpar=[]))
        if id(original_node) not in self.loose:
            expr = parenthesize(expr, ATOM)
        return expr.with_changes(lpar=[*updated_node.lpar, *expr.lpar], rpar=[*expr.rpar, *updated_node.rpar])


def _names(node: cst.CSTNode) -> list[cst.Name]:
    """Every Name node in ``node`` (itself included)."""
    found: list[cst.Name] = []

    class _Collect(cst.CSTVisitor):
        def visit_Name(self, name: cst.Name) -> None:
            found.append(name)

    node.visit(_Collect())
    return found


def variant(source: str, template: str) -> tuple[str, int]:
    """``source`` with its bare-name operands replaced by ``template``; and how many it replaced."""
    module = cst.parse_module(source)
    bound = _Bound()
    module.visit(bound)
    transformer = OperandVariants(template, _KEEP | bound.names)
    return module.visit(transformer).code, transformer.count


def _execute(source: str, run_file: Path, *, compiling: bool = False):
    """Run ``source`` as a module, then the case's ``run(ns)`` on it: its result, or the exception it raised."""
    name = f"_patchkit_variant_{abs(hash(source))}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    runner: dict = {"__name__": "_patchkit_variant_run"}
    exec(compile(run_file.read_text(), str(run_file), "exec"), runner)
    torch.manual_seed(0)
    try:
        exec(compile(source, name, "exec"), module.__dict__)
        with mock.patch.object(torch.compiler, "is_compiling", lambda: compiling):
            return runner["run"](module.__dict__)
    except Exception as exc:  # noqa: BLE001 - the comparison is of outcomes, failures included
        return exc
    finally:
        del sys.modules[name]


def _same(a, b) -> bool:
    """Exactly the same value (NaN where NaN), or the same exception type."""
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return (a.shape == b.shape and a.dtype == b.dtype
                and bool(torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))
                and bool(torch.equal(a.isnan() if a.is_floating_point() else a, b.isnan() if b.is_floating_point() else b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


REWRITING = [p for p in CASES if not p.values[1].name.startswith("untouched_")]


def _run_file(case_in: Path) -> Path:
    return case_in.with_name(case_in.name[:-6] + ".run.py")


def test_every_codemod_has_cases_to_vary():
    assert {p.values[0] for p in REWRITING} == set(REGISTRY)
    runnable = {p.values[0] for p in REWRITING if _run_file(p.values[1]).exists()}
    assert {"static-kv-cache", "decode-prefix-slice", "branch-free-pad", "chunked-reduction"} <= runnable


def test_variant_replaces_operands_not_names_it_must_keep():
    src = "import torch\n\ndef f(self, x, k):\n    y = torch.cat((x, k), dim=-1)\n    self.buf[0, :] = k\n    return y.sum(k)\n"
    out, count = variant(src, WRAPPERS["times_one"])
    assert out == ("import torch\n\ndef f(self, x, k):\n    y = torch.cat(((x * 1), (k * 1)), dim=-1)\n"
                   "    self.buf[0, :] = k * 1\n    return (y * 1).sum(k * 1)\n")
    assert count == 5
    cst.parse_module(out)


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("name,case_in", REWRITING)
def test_variant(name: str, case_in: Path, wrapper: str) -> None:
    source, count = variant(_read(case_in), WRAPPERS[wrapper])
    assert count, "the golden input has no bare-name operand to vary"
    result = run_codemod(REGISTRY[name], source, filename=case_in.name, options=_options(case_in))
    cst.parse_module(result.code)
    compile(result.code, case_in.name, "exec")
    run_file = _run_file(case_in)
    if not run_file.exists():
        return
    expected = _execute(source, run_file)
    assert _same(expected, _execute(result.code, run_file)), f"eager result changed: {expected!r}"
    if "AS_COMPILED = True" in run_file.read_text():
        assert _same(expected, _execute(result.code, run_file, compiling=True)), "compiled-only branch differs"


@pytest.mark.parametrize("name,case_in", [p for p in REWRITING if _run_file(p.values[1]).exists()])
def test_golden_runs_the_same(name: str, case_in: Path) -> None:
    """The golden pair itself: input and expected output return the same (the run file is not vacuous)."""
    run_file = _run_file(case_in)
    expected = _execute(_read(case_in), run_file)
    assert not isinstance(expected, Exception), expected
    assert _same(expected, _execute(_read(case_in.with_name(case_in.name[:-6] + ".out.py")), run_file))

