"""kv-cache-callsites: call the static accessors of a KV cache instead of its host-syncing ones."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from .base import PatchkitCodemod, compiled_else_eager


class KvCacheCallsites(PatchkitCodemod):
    """Point cache readers at the static accessors that ``static-kv-cache`` adds.

    Hazards removed at each call site inside the compiled forward:

    * graph break: ``kv_cache.seq_len(i)`` returns a Python int through
      ``.item()``; the renamed accessor (``renames``, e.g.
      ``{"seq_len": "seq_pos"}``) returns the same position as a 0-d tensor,
      which RoPE offsets and position arithmetic accept unchanged;
    * graph break + recompile per decode step: ``k, v = kv_cache[i]`` slices
      the buffers to the filled length (``.item()``, growing shapes); the
      rewrite ``kv_cache.<subscript_method>(i)`` returns the whole preallocated
      buffers, to be masked by the attention (see ``offset-causal-mask``).

    Both rewrites are compiled-only: each site becomes
    ``(<static accessor> if torch.compiler.is_compiling() else <upstream expression>)``,
    so eager runs keep upstream's exact code (host int offsets, K/V sliced to the
    filled length, upstream's ``is_causal`` choice and its speed), for every
    caller, the xFormers path included.  A site already split that way is
    recorded as already fixed.  Only receivers named in ``receivers`` are touched.
    """

    NAME = "kv-cache-callsites"
    DESCRIPTION = "Use a KV cache's tensor-position and full-buffer accessors at the call sites."
    LOOKS_FOR = "`<cache>.<renamed method>(...)` calls and `<cache>[i]` reads on a cache variable"
    OPTIONS: dict[str, Any] = {
        "receivers": None,  # the upstream's parameter names for the cache: no default
        "renames": {},
        "subscript_method": None,
    }

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        self.identifiers("receivers")
        self._target_depth = 0

    def _receiver(self, node: cst.CSTNode) -> bool:
        return m.matches(node, m.Name()) and node.value in self.options["receivers"]  # type: ignore[attr-defined]

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        func = original_node.func
        if not (isinstance(func, cst.Attribute) and self._receiver(func.value)):
            return updated_node
        name = func.attr.value
        renames = self.options["renames"]
        recv = func.value.value  # type: ignore[attr-defined]
        if self.split_depth:
            if name in renames.values() or name == self.options["subscript_method"]:
                self.record_already(original_node, f"already calls {recv}.{name}() when compiling")
            return updated_node
        if name in renames:
            new = renames[name]
            self.record(original_node, f"{recv}.{name}() (host int) -> .{new}() (0-d tensor) when compiling")
            self.require_import("torch")
            static = updated_node.with_changes(func=updated_node.func.with_changes(attr=cst.Name(new)))  # type: ignore[attr-defined]
            return compiled_else_eager(static.with_changes(lpar=[], rpar=[]), updated_node)
        return updated_node

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self._target_depth += 1

    def leave_AssignTarget(self, original_node: cst.AssignTarget, updated_node: cst.AssignTarget) -> cst.AssignTarget:
        self._target_depth -= 1
        return updated_node

    def leave_Subscript(self, original_node: cst.Subscript, updated_node: cst.Subscript) -> cst.BaseExpression:
        method = self.options["subscript_method"]
        if not method or self._target_depth or self.split_depth or not self._receiver(original_node.value):
            return updated_node
        if len(original_node.slice) != 1 or not isinstance(original_node.slice[0].slice, cst.Index):
            return updated_node
        index = updated_node.slice[0].slice.value  # type: ignore[attr-defined]
        recv = original_node.value.value  # type: ignore[attr-defined]
        self.record(original_node, f"{recv}[...] (sliced to the filled length) -> {recv}.{method}(...) when compiling")
        self.require_import("torch")
        static = cst.Call(func=cst.Attribute(value=cst.Name(recv), attr=cst.Name(method)), args=[cst.Arg(index)])
        return compiled_else_eager(static, updated_node.with_changes(lpar=[], rpar=[])).with_changes(
            lpar=[cst.LeftParen(), *original_node.lpar], rpar=[*original_node.rpar, cst.RightParen()]
        )
