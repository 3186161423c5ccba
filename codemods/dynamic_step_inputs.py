"""dynamic-step-inputs: compile a decode step dynamic in batch and length from its first call."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from .base import DYNAMIC_INT_HELPER, MARK_DYNAMIC_HELPER, CodemodOptionError, StepCallCodemod, code

HELPER = MARK_DYNAMIC_HELPER


INT_HELPER = DYNAMIC_INT_HELPER


class DynamicStepInputs(StepCallCodemod):
    """Mark the inputs of compiled step calls dynamic before the first compile.

    Hazard: a service calls a compiled step with one batch size and window
    length, then another.  Dynamo compiles the first call static, recompiles
    when the batch changes (``tensor 'x' size mismatch at index 0``) and again
    for each further specialisation, so a varied stream of calls spends the
    graph budget on shapes.  Marked up front, the first graph is already
    dynamic in those dims; only a size-1 batch keeps its own graph (Dynamo
    specialises sizes 0 and 1).  Int arguments (a number of output patches)
    are specialised the same way: static on the first call, a recompile on
    the next value.

    Inside the function named ``function``, each positional argument ``a`` of a
    call to one of ``calls`` becomes ``_patchkit_mark_dynamic(a, dims)``, a
    helper imported from patchkit's runtime helpers; so does each keyword argument named in
    ``keywords`` (``{name: dims}``), and each assignment inside ``function``
    whose target's source is named in ``assigned`` (``{'kwargs["x"]': dims}``,
    for inputs handed over as ``call(**kwargs)``).  The helper tags the tensor with
    ``torch._dynamo.maybe_mark_dynamic`` (outside a compiled region only) and
    returns it unchanged: eager values, errors and aliasing are the upstream's.
    Each keyword argument named in ``ints`` becomes
    ``_patchkit_dynamic_int(<callee>, value)``: a ``DynamicInt`` (a dynamic int
    input from the first compile) when the callee runs under torch.compile,
    the value itself otherwise; ``gate`` (source text, ``"self.model"``) names
    the module whose compilation counts instead of the callee, for a call
    that builds the compiled module's inputs (a KV cache's sizes).  Arguments
    already wrapped are reported as already fixed.
    """

    NAME = "dynamic-step-inputs"
    DESCRIPTION = "Mark compiled step-call inputs dynamic (batch, length, int arguments) before their first compile."
    LOOKS_FOR = "calls to the named step functions inside the named function"
    OPTIONS: dict[str, Any] = {"function": None, "calls": (), "dims": (0,), "keywords": {}, "ints": (),
                               "assigned": {}, "gate": None}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        o = self.options
        o["dims"] = self.dims(o["dims"], "dims")
        if not isinstance(o["keywords"], dict) or not all(isinstance(k, str) and k.isidentifier() for k in o["keywords"]):
            raise CodemodOptionError("codemod 'dynamic-step-inputs': keywords must map argument names to dims")
        o["keywords"] = {k: self.dims(v, f"keywords[{k!r}]") for k, v in o["keywords"].items()}
        if not isinstance(o["assigned"], dict) or not all(isinstance(k, str) for k in o["assigned"]):
            raise CodemodOptionError("codemod 'dynamic-step-inputs': assigned must map assignment targets to dims")
        o["assigned"] = {k: self.dims(v, f"assigned[{k!r}]") for k, v in o["assigned"].items()}
        self.identifiers("ints", required=False)
        o["gate"] = self.expression("gate")

    def leave_Assign(self, original_node: cst.Assign, updated_node: cst.Assign) -> cst.Assign:
        target = self.assigned_target(updated_node)
        if target is None:
            return updated_node
        src = code(updated_node.value)
        if m.matches(updated_node.value, m.Call(func=m.Name(HELPER))):
            self.record_already(original_node, f"`{target} = {src}` already marked dynamic")
            return updated_node
        dims = self.options["assigned"][target]
        self.record(original_node, f"`{target} = {src}` marked dynamic in dims {list(dims)}")
        return updated_node.with_changes(value=self._mark(updated_node.value, dims))

    def _mark(self, value: cst.BaseExpression, dims: tuple[int, ...]) -> cst.Call:
        """``_patchkit_mark_dynamic(value, [dims])``, with the helper imported."""
        self.import_helper(HELPER)
        return cst.Call(func=cst.Name(HELPER), args=[cst.Arg(value), cst.Arg(cst.parse_expression(repr(list(dims))))])

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        o = self.options
        call_name = self.step_call(original_node)
        if call_name is None:
            return updated_node
        args = list(updated_node.args)
        for i, arg in enumerate(args):
            if arg.star:
                continue
            where = f"argument {i}" if arg.keyword is None else f"argument {arg.keyword.value}"
            src = cst.Module([]).code_for_node(arg.value)
            if arg.keyword is not None and arg.keyword.value in o["ints"]:
                if m.matches(arg.value, m.Call(func=m.Name(INT_HELPER))):
                    self.record_already(original_node, f"{call_name} {where} `{src}` already a dynamic int")
                    continue
                wrapped = cst.Call(func=cst.Name(INT_HELPER), args=[cst.Arg(o["gate"] or self.callee(updated_node)), cst.Arg(arg.value)])
                args[i] = arg.with_changes(value=wrapped)
                self.import_helper(INT_HELPER)
                self.record(original_node, f"{call_name} {where} `{src}` a dynamic int when compiled")
                continue
            if arg.keyword is None:
                dims = o["dims"]
            elif arg.keyword.value in o["keywords"]:
                dims = o["keywords"][arg.keyword.value]
            else:
                continue
            if m.matches(arg.value, m.Call(func=m.Name(HELPER))):
                self.record_already(original_node, f"{call_name} {where} `{src}` already marked dynamic")
                continue
            args[i] = arg.with_changes(value=self._mark(arg.value, dims))
            self.record(original_node, f"{call_name} {where} `{src}` marked dynamic in dims {list(dims)}")
        return updated_node.with_changes(args=args)
