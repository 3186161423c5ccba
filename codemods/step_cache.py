"""step-cache: route an autoregressive loop's step calls through a cache object the patch set supplies."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from .base import CodemodOptionError, PatchkitCodemod


class StepCache(PatchkitCodemod):
    """Send the decode loop's model calls to a cache that computes only the new step.

    Hazard: an autoregressive loop that feeds the whole window to the model at
    every step (``model.decode_s1(window...)``) recomputes every earlier
    position through every layer to keep one output: O(window) work per
    generated token, and under ``torch.compile`` a new input length per step.

    The rewrite, in the function named by ``function``:

    * ``<cache_var> = <cache_class>(<cache_args>)`` becomes the function's first
      statement (a fresh cache per call: nothing survives between calls);
    * every ``<receiver>.<call>(...)`` with ``call`` in ``calls`` becomes
      ``<cache_var>.<call>(...)``, arguments untouched;
    * the class source given in ``helper`` (the patch set's own code) is
      appended to the module unless a class of that name is already there.

    The cache class must answer each call with the values the model's own
    method gives (it may fall back to calling it): whether the result is exact
    is the cache's contract, tested by the patch set's equivalence tests.
    """

    NAME = "step-cache"
    DESCRIPTION = "Route a decode loop's step calls through a cache object that computes only the new step."
    LOOKS_FOR = "`<receiver>.<call>(...)` calls inside the named decode-loop function"
    OPTIONS: dict[str, Any] = {
        "function": None,
        "receiver": None,
        "calls": (),
        "cache_class": None,
        "cache_args": (),
        "cache_var": "_step_cache",
        "helper": None,
    }

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        o = self.options
        self.identifier("function", "receiver", "cache_class", "cache_var")
        self.identifiers("calls")
        self.identifiers("cache_args")
        if not isinstance(o["helper"], str):
            raise CodemodOptionError("codemod 'step-cache': helper must be the cache class's source text")
        helper = cst.parse_module(o["helper"])
        if not any(isinstance(s, cst.ClassDef) and s.name.value == o["cache_class"] for s in helper.body):
            raise CodemodOptionError(f"codemod 'step-cache': helper does not define class {o['cache_class']!r}")
        body = list(helper.body)
        if body and m.matches(body[0], m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString())])):
            body = body[1:]  # the helper file's own docstring stays in the patch set
        self._helper = helper.with_changes(body=body)
        self._has_class = False
        self._routed = 0

    def visit_Module(self, node: cst.Module) -> None:
        super().visit_Module(node)
        self._has_class = any(isinstance(s, cst.ClassDef) and s.name.value == self.options["cache_class"]
                              for s in node.body)

    def _in_function(self) -> bool:
        return self.options["function"] in self.function_stack

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        o = self.options
        if not self._in_function():
            return updated_node
        calls = m.OneOf(*(m.Name(c) for c in o["calls"]))
        if m.matches(original_node.func, m.Attribute(value=m.Name(o["cache_var"]), attr=calls)):
            self.record_already(original_node, f"{o['cache_var']}.{original_node.func.attr.value}() already "
                                               "goes through the cache")  # type: ignore[attr-defined]
            return updated_node
        if not m.matches(original_node.func, m.Attribute(value=m.Name(o["receiver"]), attr=calls)):
            return updated_node
        name = original_node.func.attr.value  # type: ignore[attr-defined]
        self._routed += 1
        self.record(original_node, f"{o['receiver']}.{name}(...) -> {o['cache_var']}.{name}(...)")
        return updated_node.with_changes(func=updated_node.func.with_changes(value=cst.Name(o["cache_var"])))

    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef) -> cst.FunctionDef:
        o = self.options
        updated_node = super().leave_FunctionDef(original_node, updated_node)
        if original_node.name.value != o["function"] or not self._routed:
            return updated_node
        body = updated_node.body
        assert isinstance(body, cst.IndentedBlock)
        create = cst.SimpleStatementLine(body=[cst.Assign(
            targets=[cst.AssignTarget(cst.Name(o["cache_var"]))],
            value=cst.Call(func=cst.Name(o["cache_class"]), args=[cst.Arg(cst.Name(a)) for a in o["cache_args"]]),
        )])
        comment = cst.EmptyLine(comment=cst.Comment(
            f"# step-cache: {', '.join(o['calls'])} go through {o['cache_class']} (computes only the new step)"))
        create = create.with_changes(leading_lines=[comment])
        return updated_node.with_changes(body=body.with_changes(body=[create, *body.body]))

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        if not self._routed or self._has_class:
            return updated_node
        added = list(self._helper.body)
        first = added[0]
        added[0] = first.with_changes(leading_lines=[cst.EmptyLine(indent=False), cst.EmptyLine(indent=False),
                                                     *first.leading_lines])
        return updated_node.with_changes(body=[*updated_node.body, *added])
