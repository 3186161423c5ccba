"""cudagraph-step: mark each decode step for CUDA-graph trees and clone handed-over outputs."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.codemod.visitors import AddImportsVisitor

from .base import PatchkitCodemod, target_names

_MARK_STEP = "torch.compiler.cudagraph_mark_step_begin()"
_MARK_STEP_CALL = m.Call(
    func=m.Attribute(
        value=m.Attribute(value=m.Name("torch"), attr=m.Name("compiler")),
        attr=m.Name("cudagraph_mark_step_begin"),
    ),
    args=[],
)
_MARK_STEP_LINE = m.SimpleStatementLine(body=[m.Expr(value=_MARK_STEP_CALL)])
#: CUDA graphs exist only once inductor is loaded; calling the mark would load it (seconds) in eager runs
_MARK_STEP_GATED = f'if "torch._inductor" in sys.modules:\n    {_MARK_STEP}\n'
_MARK_STEP_IF = m.If(body=m.IndentedBlock(body=[_MARK_STEP_LINE]), orelse=None)


def _calls_step(node: cst.CSTNode, step_calls: tuple[str, ...]) -> bool:
    """Whether ``node`` contains ``<anything>.<step_call>(...)`` or ``<step_call>(...)``."""
    names = m.OneOf(*(m.Name(n) for n in step_calls))
    return bool(m.findall(node, m.Call(func=m.OneOf(m.Attribute(attr=names), names))))


class CudagraphStep(PatchkitCodemod):
    """Make an autoregressive loop safe for CUDA-graph trees (``mode="reduce-overhead"``).

    Hazard: with CUDA graphs every compiled call may start a new "generation"
    and recycle the memory of the previous generation's outputs.  A loop that
    calls compiled functions once per step, and hands one function's output to
    another (``s1_logits, context = model.decode_s1(...)`` then
    ``model.decode_s2(context, ...)``), reads a tensor that a later replay has
    overwritten: "accessing tensor output of CUDAGraphs that has been
    overwritten by a subsequent run" (pytorch #152887, #160281).

    The rewrite, in the function named ``function``, on the innermost loop
    whose body calls one of ``step_calls``:

    * ``torch.compiler.cudagraph_mark_step_begin()`` becomes the loop body's
      first statement, so one loop iteration is one generation: outputs stay
      valid until the next step begins.  It runs once ``torch._inductor`` is
      loaded (``if "torch._inductor" in sys.modules:``): CUDA graphs need
      inductor, and the call itself would load inductor and Dynamo, seconds of
      import, into a purely eager run;
    * after each assignment in that loop that binds a name listed in ``clone``
      from a ``step_calls`` call, ``name = name.clone()`` is inserted, so the
      value handed to the next compiled call (or kept past the step) is owned
      by eager code, not by the CUDA-graph memory pool.

    Without CUDA graphs both are no-ops in effect: the mark only bumps a
    counter, and a clone copies a tensor.  Values and exceptions are unchanged.
    """

    NAME = "cudagraph-step"
    DESCRIPTION = "Call torch.compiler.cudagraph_mark_step_begin() per decode step and clone compiled outputs handed across calls."
    LOOKS_FOR = "a `for`/`while` loop in the named function whose body calls one of the step functions"
    OPTIONS: dict[str, Any] = {"function": None, "step_calls": (), "clone": ()}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        o = self.options
        self.identifier("function")
        self.identifiers("step_calls")
        if o["clone"]:
            self.identifiers("clone")
        o["clone"] = tuple(o["clone"])

    def _in_scope(self) -> bool:
        return self.current_function == self.options["function"]

    def _is_step_loop(self, loop: cst.For | cst.While) -> bool:
        steps = self.options["step_calls"]
        if not _calls_step(loop.body, steps):
            return False
        # innermost: no nested loop of its own that calls a step function
        inner = m.findall(loop.body, m.OneOf(m.For(), m.While()))
        return not any(_calls_step(n.body, steps) for n in inner)  # type: ignore[attr-defined]

    def leave_For(self, original_node: cst.For, updated_node: cst.For) -> cst.For:
        return self._rewrite_loop(original_node, updated_node)

    def leave_While(self, original_node: cst.While, updated_node: cst.While) -> cst.While:
        return self._rewrite_loop(original_node, updated_node)

    def _rewrite_loop(self, original_node, updated_node):
        if not self._in_scope() or not self._is_step_loop(original_node):
            return updated_node
        if not isinstance(updated_node.body, cst.IndentedBlock):
            return updated_node  # a one-line loop body: leave it, report drift
        body = list(updated_node.body.body)
        out: list[cst.BaseStatement] = []
        changed = False
        if body and m.matches(body[0], m.OneOf(_MARK_STEP_LINE, _MARK_STEP_IF)):
            self.record_already(original_node, "loop already calls torch.compiler.cudagraph_mark_step_begin()")
        else:
            self.require_import("sys")
            self.require_import("torch")
            out.append(cst.parse_statement(_MARK_STEP_GATED))
            self.record(original_node, f"{_MARK_STEP} at the top of the decode loop")
            changed = True

        originals = list(original_node.body.body)
        for i, stmt in enumerate(body):
            if out and i == 0 and changed and hasattr(stmt, "leading_lines"):
                # the mark takes the first line; the old first statement keeps its comments
                out[0] = out[0].with_changes(leading_lines=stmt.leading_lines)  # type: ignore[union-attr]
                stmt = stmt.with_changes(leading_lines=[])  # type: ignore[union-attr]
            following = body[i + 1] if i + 1 < len(body) else None
            cloned = self.clone_after(stmt, originals[i], following, self._cloned_names(stmt), "its step call")
            changed = changed or len(cloned) > 1
            out += cloned
        if not changed:
            return updated_node
        AddImportsVisitor.add_needed_import(self.context, "torch")
        return updated_node.with_changes(body=updated_node.body.with_changes(body=out))

    def _cloned_names(self, stmt: cst.BaseStatement) -> list[str]:
        wanted = self.options["clone"]
        if not wanted or not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
            return []
        assign = stmt.body[0]
        if not isinstance(assign, cst.Assign) or not _calls_step(assign.value, self.options["step_calls"]):
            return []
        names: list[str] = []
        for target in assign.targets:
            names.extend(n for n in target_names(target.target) if n in wanted)
        return names
