"""mark-growing-dynamic: tell torch.compile up front that a loop-grown input has a dynamic length."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.codemod.visitors import AddImportsVisitor
from libcst.helpers import parse_template_expression, parse_template_statement

from .base import PatchkitCodemod
from .base import code as _code

_CAT = m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("cat")))
_MARK = m.Call(
    func=m.Attribute(
        value=m.Attribute(value=m.Name("torch"), attr=m.Name("_dynamo")),
        attr=m.OneOf(m.Name("maybe_mark_dynamic"), m.Name("mark_dynamic")),
    )
)


def _int(node: cst.BaseExpression) -> int | None:
    if isinstance(node, cst.Integer):
        return int(node.value)
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus) and isinstance(node.expression, cst.Integer):
        return -int(node.expression.value)
    return None


class MarkGrowingDynamic(PatchkitCodemod):
    """Mark tensors that an autoregressive loop grows with ``torch.cat`` as dynamic.

    Hazard: a decode loop that does ``x = torch.cat([x, step], dim=d)`` and
    passes ``x`` to a compiled callee changes ``x.shape[d]`` on every
    iteration.  Dynamo compiles the first length statically, recompiles on the
    second with that dimension dynamic, and starts over for every new call
    site geometry (a different horizon): one recompile per phase and call.

    At the top of such a loop body the codemod adds
    ``torch._dynamo.maybe_mark_dynamic(x, <dim>)`` for each grown tensor that
    the loop passes to one of the ``calls`` (e.g. ``["self.model"]``), so the
    first compile is already dynamic in that dimension.  It is a no-op in
    eager (it only tags the tensor) and never errors if the dimension ends up
    static.  Only ``torch.cat`` statements directly in the loop body with an
    integer ``dim`` are considered.
    """

    NAME = "mark-growing-dynamic"
    DESCRIPTION = "Mark loop-grown (torch.cat) inputs of a compiled callee dynamic before the first compile."
    LOOKS_FOR = "a for loop that rebinds `x = torch.cat([x, ...], dim=d)` and passes x to one of `calls`"
    OPTIONS: dict[str, Any] = {"calls": ()}

    def leave_For(self, original_node: cst.For, updated_node: cst.For) -> cst.For:
        if not isinstance(updated_node.body, cst.IndentedBlock):
            return updated_node
        body = list(updated_node.body.body)
        grown: dict[str, int] = {}
        for stmt in body:
            if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1):
                continue
            assign = stmt.body[0]
            if not m.matches(assign, m.Assign(targets=[m.AssignTarget(target=m.Name())], value=_CAT)):
                continue
            name = assign.targets[0].target.value  # type: ignore[attr-defined]
            call = assign.value  # type: ignore[attr-defined]
            first = call.args[0].value if call.args else None
            if not (isinstance(first, (cst.List, cst.Tuple)) and first.elements and m.matches(first.elements[0].value, m.Name(name))):
                continue
            dim_arg = next((a for a in call.args[1:] if a.keyword is None or a.keyword.value == "dim"), None)
            dim = _int(dim_arg.value) if dim_arg is not None else 0
            if dim is not None:
                grown[name] = dim
        if not grown:
            return updated_node
        passed: set[str] = set()
        for call in m.findall(updated_node.body, m.Call()):
            if _code(call.func) in self.options["calls"]:  # type: ignore[attr-defined]
                for arg in call.args:  # type: ignore[attr-defined]
                    if isinstance(arg.value, cst.Name):
                        passed.add(arg.value.value)
        targets = [n for n in grown if n in passed]
        if not targets:
            return updated_node
        marked = set()
        for stmt in body:
            for mark in m.findall(stmt, _MARK):
                if mark.args and isinstance(mark.args[0].value, cst.Name):  # type: ignore[attr-defined]
                    marked.add(mark.args[0].value.value)  # type: ignore[attr-defined]
                    if mark.args[0].value.value in targets:  # type: ignore[attr-defined]
                        self.record_already(mark, f"{mark.args[0].value.value} already marked dynamic")  # type: ignore[attr-defined]
        new = []
        for name in targets:
            if name in marked:
                continue
            dim = grown[name]
            tensor = cst.Name(name)
            dim_node = (cst.Integer(str(dim)) if dim >= 0
                        else parse_template_expression("{x}.ndim - {n}", x=tensor, n=cst.Integer(str(-dim))))
            AddImportsVisitor.add_needed_import(self.context, "torch")
            new.append(parse_template_statement("torch._dynamo.maybe_mark_dynamic({x}, {dim})", x=tensor, dim=dim_node))
            self.record(original_node, f"{name} grows by torch.cat(dim={dim}) each iteration -> marked dynamic")
        if not new:
            return updated_node
        new[0] = new[0].with_changes(
            leading_lines=[cst.EmptyLine(comment=cst.Comment("# these grow every iteration: compile them dynamic from the start"))]
        )
        if body:
            body[0] = body[0].with_changes(leading_lines=body[0].leading_lines)
        return updated_node.with_changes(body=updated_node.body.with_changes(body=[*new, *body]))
