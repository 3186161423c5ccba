"""dynamic-step-inputs: compile a decode step dynamic in batch and length from its first call."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from .base import CodemodOptionError, StepCallCodemod

HELPER = "_patchkit_mark_dynamic"

_HELPER_SRC = f'''

def {HELPER}(tensor, dims):
    """patchkit dynamic-step-inputs: compile this input's dims dynamic from the first call; eager: no effect
    (torch._dynamo is not imported for it: until something is compiled, it is not loaded)."""
    if not torch.compiler.is_compiling() and "torch._dynamo" in sys.modules:
        torch._dynamo.maybe_mark_dynamic(tensor, dims)
    return tensor
'''


class DynamicStepInputs(StepCallCodemod):
    """Mark the positional inputs of compiled step calls dynamic before the first compile.

    Hazard: a service calls a compiled step with one batch size and window
    length, then another.  Dynamo compiles the first call static, recompiles
    when the batch changes (``tensor 'x' size mismatch at index 0``) and again
    for each further specialisation, so a varied stream of calls spends the
    graph budget on shapes.  Marked up front, the first graph is already
    dynamic in those dims; only a size-1 batch keeps its own graph (Dynamo
    specialises sizes 0 and 1).

    Inside the function named ``function``, each positional argument ``a`` of a
    call to one of ``calls`` becomes ``_patchkit_mark_dynamic(a, dims)``, a
    helper appended to the module once.  The helper tags the tensor with
    ``torch._dynamo.maybe_mark_dynamic`` (outside a compiled region only) and
    returns it unchanged: eager values, errors and aliasing are the upstream's.
    Arguments already wrapped are reported as already fixed.
    """

    NAME = "dynamic-step-inputs"
    DESCRIPTION = "Mark compiled step-call inputs dynamic (batch, length) before their first compile."
    LOOKS_FOR = "calls to the named step functions inside the named function"
    OPTIONS: dict[str, Any] = {"function": None, "calls": (), "dims": (0,)}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        o = self.options
        o["dims"] = tuple(o["dims"])
        if not o["dims"] or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in o["dims"]):
            raise CodemodOptionError("codemod 'dynamic-step-inputs': dims must be non-negative dimension indices")
        self._wrapped = False
        self._has_helper = False

    def visit_Module(self, node: cst.Module) -> None:
        super().visit_Module(node)
        self._has_helper = any(m.matches(s, m.FunctionDef(name=m.Name(HELPER))) for s in node.body)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        o = self.options
        call_name = self.step_call(original_node)
        if call_name is None:
            return updated_node
        dims = cst.parse_expression(repr(list(o["dims"])))
        args = list(updated_node.args)
        for i, arg in enumerate(args):
            if arg.keyword is not None or arg.star:
                continue
            src = cst.Module([]).code_for_node(arg.value)
            if m.matches(arg.value, m.Call(func=m.Name(HELPER))):
                self.record_already(original_node, f"{call_name} argument {i} `{src}` already marked dynamic")
                continue
            wrapped = cst.Call(func=cst.Name(HELPER), args=[cst.Arg(arg.value), cst.Arg(dims)])
            args[i] = arg.with_changes(value=wrapped)
            self._wrapped = True
            self.record(original_node, f"{call_name} argument {i} `{src}` marked dynamic in dims {list(o['dims'])}")
        return updated_node.with_changes(args=args)

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        if not self._wrapped or self._has_helper:
            return updated_node
        self.require_import("torch")
        self.require_import("sys")
        helper = list(cst.parse_module(_HELPER_SRC.lstrip("\n").replace("\n", updated_node.default_newline)).body)
        helper[0] = helper[0].with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()])
        return updated_node.with_changes(body=[*updated_node.body, *helper])
