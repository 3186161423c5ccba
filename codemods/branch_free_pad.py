"""branch-free-pad: one compiled graph for inputs whose length is, or is not, a multiple of the padding unit."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.helpers import parse_template_expression, parse_template_statement

from .base import IS_COMPILING as _IS_COMPILING_CALL
from .base import IS_COMPILING_CODE as _IS_COMPILING
from .base import ADD, MUL, ScopedCodemod, parenthesize
from .base import code as _code


def _residue(test: cst.BaseExpression) -> tuple[cst.BaseExpression, cst.BaseExpression] | None:
    """``(A, B)`` for a test ``A % B != 0``, else None."""
    if not m.matches(test, m.Comparison(left=m.BinaryOperation(operator=m.Modulo()),
                                        comparisons=[m.ComparisonTarget(operator=m.NotEqual(),
                                                                        comparator=m.Integer("0"))])):
        return None
    mod = test.left  # type: ignore[attr-defined]
    return mod.left, mod.right


def _shortfall(node: cst.CSTNode, a: str, b: str) -> bool:
    """Whether ``node`` contains ``B - (A % B)`` (the pad length of ``A`` up to a multiple of ``B``)."""
    for sub in m.findall(node, m.BinaryOperation(operator=m.Subtract(), right=m.BinaryOperation(operator=m.Modulo()))):
        if (_code(sub.left) == b and _code(sub.right.left) == a  # type: ignore[attr-defined]
                and _code(sub.right.right) == b):  # type: ignore[attr-defined]
            return True
    return False


_FULL = m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("full")))
_CAT = m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("concat") | m.Name("cat")))


def _pad_shape(body: cst.BaseSuite) -> tuple[str, cst.BaseExpression, str] | None:
    """``(tensor, fill, side)`` for a body that builds ``P = torch.full(..., fill_value=V, ...)`` and then
    ``X = torch.cat((P, X), dim=-1)`` (side "left") or ``(X, P)`` ("right"); None for any other shape."""
    padding = fill = None
    for stmt in m.findall(body, m.Assign(targets=[m.AssignTarget(target=m.Name())], value=_FULL)):
        kw = {a.keyword.value: a.value for a in stmt.value.args if a.keyword}  # type: ignore[attr-defined]
        pos = [a.value for a in stmt.value.args if a.keyword is None]  # type: ignore[attr-defined]
        value = kw.get("fill_value", pos[1] if len(pos) > 1 else None)
        if value is not None:
            padding, fill = stmt.targets[0].target.value, value  # type: ignore[attr-defined]
    if padding is None:
        return None
    for stmt in m.findall(body, m.Assign(targets=[m.AssignTarget(target=m.Name())], value=_CAT)):
        call = stmt.value
        target = stmt.targets[0].target.value  # type: ignore[attr-defined]
        args = [a for a in call.args if a.keyword is None]  # type: ignore[attr-defined]
        dims = [_code(a.value) for a in call.args if a.keyword and a.keyword.value == "dim"]  # type: ignore
        if len(args) != 1 or not isinstance(args[0].value, (cst.Tuple, cst.List)) or dims != ["-1"]:
            continue
        names = [_code(el.value) for el in args[0].value.elements]
        if names == [padding, target]:
            return target, fill, "left"
        if names == [target, padding]:
            return target, fill, "right"
    return None


class BranchFreePad(ScopedCodemod):
    """Pad to a multiple of ``B`` without a Python branch on ``A % B`` while compiling.

    Hazard: ``if A % B != 0:`` followed by a pad of ``B - (A % B)`` elements
    (``P = torch.full(..., fill_value=V)``, then ``X = torch.cat((P, X), dim=-1)``)
    on a dynamic length ``A``: Dynamo guards on ``A % B`` and compiles one graph
    for multiples of ``B`` and another for the rest; moving the branch inside the
    graph is not enough either, because a padding tensor whose size is the pad
    length is specialised by AOTAutograd for sizes 0 and 1 (guards such as
    ``((16 - (L % 16)) % 16) == 1`` in a recompile log).

    The rewrite, in methods named ``function`` (of the class ``class_name`` when
    given), keeps the upstream branch, byte for byte, as the ``elif`` of a new
    ``if torch.compiler.is_compiling():`` whose body is one
    ``X = torch.nn.functional.pad(X, ((B - (A % B)) % B, 0), value=V)`` (``(0,
    ...)`` when the pad goes on the right).  Eager code runs exactly upstream's
    lines; compiled code pads by 0 when ``A`` is a multiple of ``B``: the same
    values, one graph.  A branch of any other shape is left alone.
    """

    NAME = "branch-free-pad"
    DESCRIPTION = "Compiled code pads by (B - A % B) % B with F.pad instead of branching on A % B != 0."
    LOOKS_FOR = "`if A % B != 0:` whose body pads X with torch.full + torch.cat by `B - (A % B)`, in the named method"
    OPTIONS: dict[str, Any] = {"function": None, "class_name": None}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        self._kept: set[int] = set()

    def visit_If(self, node: cst.If) -> None:
        # `if torch.compiler.is_compiling(): ... elif A % B != 0:` is this codemod's own output: its elif stays
        if m.matches(node.test, _IS_COMPILING_CALL) and isinstance(node.orelse, cst.If):
            self._kept.add(id(node.orelse))

    def leave_If(self, original_node: cst.If, updated_node: cst.If) -> cst.If:
        if not self.in_scope():
            return updated_node
        test = updated_node.test
        if id(original_node) in self._kept:
            if _residue(test) is not None:
                self.record_already(original_node, "compiled code already pads without a branch")
            return updated_node
        residue = _residue(test)
        if residue is None:
            return updated_node
        a, b = residue
        shape = _pad_shape(updated_node.body)
        if shape is None or not _shortfall(updated_node.body, _code(a), _code(b)):
            return updated_node  # not a NaN/constant pad of the expected shape: not this hazard
        tensor, fill, side = shape
        # (B - (A % B)) % B: A is the left operand of %, B the left of - and the right of %
        amount = parse_template_expression(
            "({b_left} - ({a} % {b_right})) % {b_right}",
            a=parenthesize(a, MUL), b_left=parenthesize(b, ADD), b_right=parenthesize(b, MUL + 1),
        )
        compiled = parse_template_statement(
            "{x} = torch.nn.functional.pad({x}, ({amount}, 0), value={fill})" if side == "left"
            else "{x} = torch.nn.functional.pad({x}, (0, {amount}), value={fill})",
            x=cst.Name(tensor), amount=amount, fill=fill,
        )
        self.require_import("torch")
        self.record(original_node, f"`if {_code(test)}:` kept for eager; compiled code pads `{tensor}` by "
                                   f"`{_code(amount)}` with torch.nn.functional.pad")
        return cst.If(
            test=cst.parse_expression(_IS_COMPILING),
            body=cst.IndentedBlock(body=[compiled]),
            orelse=updated_node.with_changes(leading_lines=[]),
            leading_lines=updated_node.leading_lines,
        )
