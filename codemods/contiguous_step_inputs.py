"""contiguous-step-inputs: hand compiled step functions tensors with canonical strides, so strides never recompile them."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from .base import CONTIGUOUS_HELPER, MARK_DYNAMIC_HELPER, CodemodOptionError, StepCallCodemod, code

HELPER = CONTIGUOUS_HELPER


_WRAPPED = m.Call(func=m.Name(HELPER))
_MARKED = m.Call(func=m.Name(MARK_DYNAMIC_HELPER))


class ContiguousStepInputs(StepCallCodemod):
    """Give the chosen arguments of a step call canonical contiguous strides.

    Hazard: a decode loop that feeds a compiled function sometimes a view of a
    preallocated buffer (``buf[:, :n]``: ``stride(0) == capacity``) and
    sometimes the whole buffer (``stride(0) == size(1)``) changes the stride
    relations Dynamo guards on (for example ``x.stride()[0] != x.size()[1]``),
    so the function recompiles when the window saturates, even with dynamic
    shapes.  ``.contiguous()`` is not enough: a one-row slice ``(1, M)[:, :N]``
    counts as contiguous and keeps stride ``M`` in its size-1 dim, which Dynamo
    guards on too (``x.stride()[0] == 16*n``).  Tensors with canonical strides
    (those of a fresh tensor of their shape) always have the same stride
    relations.

    Rewrites ``<obj>.<call>(a, b, ...)`` (or ``<call>(...)``) inside the function
    named ``function``, for each call name in ``calls``: each 0-based positional
    index in ``args`` and each keyword argument named in ``keywords`` becomes
    ``_patchkit_contiguous(a)``, a helper imported from patchkit's runtime helpers that
    returns the tensor itself when its strides are canonical and a contiguous
    copy otherwise (same values; the step functions this is used on do not
    write to their inputs).  Inputs handed over through a keyword dict
    (``kwargs["x"] = x`` then ``call(**kwargs)``) are named in ``assigned`` by
    their assignment target's source (``'kwargs["x"]'``): inside ``function``
    that assignment's value is wrapped the same way.  An argument marked by
    ``dynamic-step-inputs`` stays marked: the mark moves to the copy.
    Arguments already wrapped are reported as already fixed.
    """

    NAME = "contiguous-step-inputs"
    DESCRIPTION = "Pass canonically strided tensors to compiled step calls so buffer views and full buffers share one graph."
    LOOKS_FOR = "calls to the named step functions inside the named function, with the given arguments"
    OPTIONS: dict[str, Any] = {"function": None, "calls": (), "args": (), "keywords": (), "assigned": ()}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        o = self.options
        o["args"] = self.dims(o["args"], "args (argument positions)", required=False)
        o["assigned"] = (o["assigned"],) if isinstance(o["assigned"], str) else tuple(o["assigned"])
        self.identifiers("keywords", required=False)
        if not o["args"] and not o["assigned"] and not o["keywords"]:
            raise CodemodOptionError(
                "codemod 'contiguous-step-inputs': give args (positions), keywords (names) or assigned (targets)"
            )
        self._wrapped = False

    def _wrap(self, node: cst.CSTNode, value: cst.BaseExpression, what: str) -> cst.BaseExpression | None:
        """``value`` wrapped (inside the mark if it is marked), or None when it is wrapped already."""
        inner = value.args[0].value if m.matches(value, _MARKED) and value.args else value
        if m.matches(inner, _WRAPPED):
            self.record_already(node, f"{what} `{code(inner)}` already canonical")
            return None
        wrapped = cst.Call(func=cst.Name(HELPER), args=[cst.Arg(inner)])
        self._wrapped = True
        self.record(node, f"{what} `{code(inner)}` -> `{code(wrapped)}`")
        if inner is value:
            return wrapped
        return value.with_changes(args=[value.args[0].with_changes(value=wrapped), *value.args[1:]])

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        target = self.assigned_target(updated_node)
        if target is None:
            return updated_node
        wrapped = self._wrap(original_node, updated_node.value, f"`{target} = ...`")
        return updated_node if wrapped is None else updated_node.with_changes(value=wrapped)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        o = self.options
        call_name = self.step_call(original_node)
        if call_name is None:
            return updated_node
        positional = [i for i, a in enumerate(updated_node.args) if a.keyword is None and not a.star]
        chosen = [(positional[p], f"argument {p}") for p in o["args"] if p < len(positional)]
        chosen += [(i, f"argument {a.keyword.value}") for i, a in enumerate(updated_node.args)
                   if a.keyword is not None and a.keyword.value in o["keywords"]]
        args = list(updated_node.args)
        for idx, what in chosen:
            wrapped = self._wrap(original_node, args[idx].value, f"{call_name} {what}")
            if wrapped is not None:
                args[idx] = args[idx].with_changes(value=wrapped)
        return updated_node.with_changes(args=args)

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        if not self._wrapped:
            return updated_node
        self.import_helper(HELPER)
        return updated_node
