"""contiguous-step-inputs: hand compiled step functions contiguous tensors, so strides never recompile them."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from .base import CodemodOptionError, StepCallCodemod
from .dynamic_step_inputs import HELPER as MARK_HELPER

_CONTIGUOUS = m.Call(func=m.Attribute(attr=m.Name("contiguous")), args=[])


def _contiguous(value: cst.BaseExpression) -> cst.Call:
    """``value.contiguous()``, parenthesising an expression that needs it."""
    if not isinstance(value, (cst.Name, cst.Attribute, cst.Subscript, cst.Call)):
        value = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.Call(func=cst.Attribute(value=value, attr=cst.Name("contiguous")))


class ContiguousStepInputs(StepCallCodemod):
    """Make the chosen positional arguments of a step call ``.contiguous()``.

    Hazard: a decode loop that feeds a compiled function sometimes a view of a
    preallocated buffer (``buf[:, :n]``: ``stride(0) == capacity``) and
    sometimes the whole buffer (``stride(0) == size(1)``) changes the stride
    relations Dynamo guards on (for example ``x.stride()[0] != x.size()[1]``),
    so the function recompiles when the window saturates, even with dynamic
    shapes.  Contiguous arguments always have the same stride relations; for an
    argument that is contiguous already, ``.contiguous()`` returns it as is.

    Rewrites ``<obj>.<call>(a, b, ...)`` (or ``<call>(...)``) inside the function
    named ``function``, for each call name in ``calls`` and each 0-based
    positional index in ``args``: ``a`` -> ``a.contiguous()``.  Inputs handed
    over through a keyword dict (``kwargs["x"] = x`` then ``call(**kwargs)``)
    are named in ``assigned`` by their assignment target's source
    (``'kwargs["x"]'``): inside ``function`` that assignment's value becomes
    ``x.contiguous()``.  Arguments that already end in ``.contiguous()`` are
    reported as already fixed.
    """

    NAME = "contiguous-step-inputs"
    DESCRIPTION = "Pass .contiguous() tensors to compiled step calls so buffer views and full buffers share one graph."
    LOOKS_FOR = "calls to the named step functions inside the named function, with the given positional arguments"
    OPTIONS: dict[str, Any] = {"function": None, "calls": (), "args": (), "assigned": ()}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        o = self.options
        o["args"] = tuple(o["args"])
        o["assigned"] = (o["assigned"],) if isinstance(o["assigned"], str) else tuple(o["assigned"])
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in o["args"]):
            raise CodemodOptionError("codemod 'contiguous-step-inputs': args must be non-negative positions")
        if not o["args"] and not o["assigned"]:
            raise CodemodOptionError("codemod 'contiguous-step-inputs': give args (positions) or assigned (targets)")

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        if self.current_function != self.options["function"]:
            return updated_node
        targets = [cst.Module([]).code_for_node(t.target) for t in updated_node.targets]
        named = [t for t in targets if t in self.options["assigned"]]
        if not named:
            return updated_node
        value = updated_node.value
        src = cst.Module([]).code_for_node(value)
        if m.matches(value, _CONTIGUOUS):
            self.record_already(original_node, f"`{named[0]} = {src}` already contiguous")
            return updated_node
        self.record(original_node, f"`{named[0]} = {src}` -> `{src}.contiguous()`")
        return updated_node.with_changes(value=_contiguous(value))

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        o = self.options
        call_name = self.step_call(original_node)
        if call_name is None:
            return updated_node
        positional = [i for i, a in enumerate(updated_node.args) if a.keyword is None and not a.star]
        args = list(updated_node.args)
        for pos in o["args"]:
            if pos >= len(positional):
                continue
            idx = positional[pos]
            value = args[idx].value
            if m.matches(value, m.Call(func=m.Name(MARK_HELPER))) and value.args:
                value = value.args[0].value  # dynamic-step-inputs ran first: look at the tensor it tags
            src = cst.Module([]).code_for_node(value)
            if m.matches(value, _CONTIGUOUS):
                self.record_already(original_node, f"{call_name} argument {pos} `{src}` already contiguous")
                continue
            wrapped = _contiguous(value)
            args[idx] = args[idx].with_changes(value=wrapped)
            self.record(original_node, f"{call_name} argument {pos} `{src}` -> `{cst.Module([]).code_for_node(wrapped)}`")
        return updated_node.with_changes(args=args)
