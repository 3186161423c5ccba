"""clone-step-output: copy a compiled call's output that the caller keeps past the next compiled call."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from .base import StepCallCodemod, target_names


class CloneStepOutput(StepCallCodemod):
    """Clone the named results of compiled calls inside one function, so a later CUDA-graph replay cannot overwrite them.

    Hazard: under ``mode="reduce-overhead"`` (CUDA-graph trees) every call of a
    compiled module in inference starts a new generation, and the outputs of the
    previous generation live in a memory pool the next replay reuses.  A caller
    that keeps one call's output while it calls the module again (a pipeline that
    appends each step's prediction to a list, then concatenates them after
    autoregressive unrolling) reads overwritten memory: "accessing tensor output
    of CUDAGraphs that has been overwritten by a subsequent run".

    The rewrite, in the function named ``function``: after each assignment
    (plain or annotated) whose value contains a call to one of ``calls``
    (``obj.<call>(...)`` or ``<call>(...)``) and which binds a name listed in
    ``clone``, ``name = name.clone()`` is inserted, so what the function hands
    on is owned by eager code.  Without CUDA graphs the clone only copies a
    tensor: values, dtypes, devices and exceptions are unchanged.  An
    assignment already followed by ``name = name.clone()`` is reported as fixed.
    """

    NAME = "clone-step-output"
    DESCRIPTION = "Clone compiled-call outputs a caller keeps across calls, so CUDA-graph replays cannot overwrite them."
    LOOKS_FOR = "an assignment of a named result from a call to one of the named functions, inside the named function"
    OPTIONS: dict[str, Any] = {"function": None, "calls": (), "clone": ()}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        self.identifiers("clone")

    def _bound(self, stmt: cst.BaseStatement) -> list[str]:
        """Names in ``clone`` that ``stmt`` binds from a step call."""
        if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
            return []
        small = stmt.body[0]
        if isinstance(small, cst.Assign):
            targets = [t.target for t in small.targets]
        elif isinstance(small, cst.AnnAssign) and small.value is not None:
            targets = [small.target]
        else:
            return []
        if not any(self.step_call(call) for call in m.findall(small.value, m.Call())):
            return []
        return [n for t in targets for n in target_names(t) if n in self.options["clone"]]

    def leave_IndentedBlock(self, original_node: cst.IndentedBlock,
                            updated_node: cst.IndentedBlock) -> cst.IndentedBlock:
        if self.current_function != self.options["function"]:
            return updated_node
        body = list(updated_node.body)
        originals = list(original_node.body)
        out: list[cst.BaseStatement] = []
        for i, stmt in enumerate(body):
            following = body[i + 1] if i + 1 < len(body) else None
            out += self.clone_after(stmt, originals[i], following, self._bound(originals[i]), "the compiled call")
        changed = len(out) != len(body)
        return updated_node.with_changes(body=out) if changed else updated_node
