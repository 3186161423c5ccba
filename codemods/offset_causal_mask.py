"""offset-causal-mask: build the attention mask from a tensor query offset instead of ``offset == 0``."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.codemod.visitors import AddImportsVisitor

from .base import PatchkitCodemod

_HELPER = '''
def {name}(attn_mask, offset, query, key):
    """Mask for queries at positions ``offset + i`` over a preallocated key buffer.

    With a static KV cache the keys are the whole buffer and ``offset`` is a 0-d
    tensor: key ``j`` is visible to query ``i`` when ``j <= offset + i`` (causal,
    and positions not filled yet are hidden).  A Python int offset means no
    static cache: ``attn_mask`` is returned unchanged.
    """
    if not torch.is_tensor(offset):
        return attn_mask
    query_pos = offset + torch.arange(query.shape[-2], device=query.device)
    visible = torch.arange(key.shape[-2], device=key.device) <= query_pos.unsqueeze(-1)
    if attn_mask is None:
        return visible
    if attn_mask.dtype == torch.bool:
        return attn_mask & visible
    return attn_mask.masked_fill(~visible, float("-inf"))
'''


def _strip(node: cst.BaseExpression) -> cst.BaseExpression:
    return node.with_changes(lpar=[], rpar=[]) if getattr(node, "lpar", None) else node


def _kw(call: cst.Call, name: str) -> cst.Arg | None:
    return next((a for a in call.args if a.keyword is not None and a.keyword.value == name), None)


class OffsetCausalMask(PatchkitCodemod):
    """Rewrite ``is_causal=(mask is None and offset == 0)`` for a tensor ``offset``.

    Hazard: once the KV-cache position is a 0-d tensor (``static-kv-cache``) the
    query offset is a tensor, and ``offset == 0`` is a data-dependent branch
    (graph break); with a symbolic int it raises ``TypeError: ... not SymBool``
    because ``is_causal`` must be a Python bool.  Reading the whole
    preallocated K/V buffers also needs a mask over the unfilled positions.

    In a call that has both ``attn_mask=<m>`` and
    ``is_causal=(<m> is None and <offset> == 0)`` the codemod passes
    ``attn_mask=<helper>(<m>, <offset>, <query>, <key>)`` and
    ``is_causal=(<m> is None and not torch.is_tensor(<offset>) and <offset> == 0)``,
    and adds the helper function to the module.  For a Python int offset (no
    cache, or a cache with the old accessors) the helper returns ``<m>`` and
    the call is exactly the old one.  For a tensor offset the mask is
    ``key_pos <= offset + query_pos``: the same attention as the causal mask
    over the filled prefix.
    """

    NAME = "offset-causal-mask"
    DESCRIPTION = "Derive the causal mask from a tensor KV-cache offset instead of branching on offset == 0."
    LOOKS_FOR = "a call with `attn_mask=<m>` and `is_causal=(<m> is None and <offset> == 0)`"
    OPTIONS: dict[str, Any] = {"helper": "_offset_causal_mask"}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        self._need_helper = False

    def _parts(self, value: cst.BaseExpression) -> tuple[str, cst.BaseExpression, bool] | None:
        """(mask name, offset expr, already_fixed) from the is_causal expression."""
        value = _strip(value)
        if not (isinstance(value, cst.BooleanOperation) and isinstance(value.operator, cst.And)):
            return None
        left, right = _strip(value.left), _strip(value.right)
        already = False
        if isinstance(left, cst.BooleanOperation) and isinstance(left.operator, cst.And):
            guard = _strip(left.right)
            if m.matches(guard, m.UnaryOperation(operator=m.Not(), expression=m.Call(
                    func=m.Attribute(value=m.Name("torch"), attr=m.Name("is_tensor"))))):
                already, left = True, _strip(left.left)
        if not m.matches(left, m.Comparison(left=m.Name(), comparisons=[m.ComparisonTarget(operator=m.Is(), comparator=m.Name("None"))])):
            return None
        if not m.matches(right, m.Comparison(comparisons=[m.ComparisonTarget(operator=m.Equal(), comparator=m.Integer("0"))])):
            return None
        return left.left.value, right.left, already  # type: ignore[attr-defined]

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        causal = _kw(original_node, "is_causal")
        mask = _kw(original_node, "attn_mask")
        if causal is None or mask is None:
            return updated_node
        parts = self._parts(causal.value)
        if parts is None:
            return updated_node
        mask_name, offset, already = parts
        if already:
            self.record_already(original_node, "is_causal already guarded by torch.is_tensor(offset)")
            return updated_node
        if not m.matches(mask.value, m.Name(mask_name)):
            return updated_node
        positional = [a for a in original_node.args if a.keyword is None and not a.star]
        query = positional[0].value if positional else (_kw(original_node, "query") or _kw(original_node, "q"))
        key = positional[1].value if len(positional) > 1 else (_kw(original_node, "key") or _kw(original_node, "k"))
        if isinstance(query, cst.Arg):
            query = query.value
        if isinstance(key, cst.Arg):
            key = key.value
        if query is None or key is None:
            return updated_node
        code = cst.Module([]).code_for_node
        off = code(offset)
        new_mask = cst.parse_expression(
            f"{self.options['helper']}({mask_name}, {off}, {code(query)}, {code(key)})"
        )
        new_causal = cst.parse_expression(
            f"({mask_name} is None and not torch.is_tensor({off}) and {off} == 0)"
        )
        args = []
        for arg in updated_node.args:
            if arg.keyword is not None and arg.keyword.value == "attn_mask":
                arg = arg.with_changes(value=new_mask)
            elif arg.keyword is not None and arg.keyword.value == "is_causal":
                arg = arg.with_changes(value=new_causal)
            args.append(arg)
        AddImportsVisitor.add_needed_import(self.context, "torch")
        self._need_helper = True
        self.record(original_node, f"is_causal=({mask_name} is None and {off} == 0) -> mask from the tensor offset")
        return updated_node.with_changes(args=args)

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        name = self.options["helper"]
        has_helper = any(isinstance(s, cst.FunctionDef) and s.name.value == name for s in updated_node.body)
        if not self._need_helper or has_helper:
            return updated_node
        helper = cst.parse_statement(_HELPER.format(name=name).lstrip("\n"))
        helper = helper.with_changes(leading_lines=[cst.EmptyLine(indent=False), cst.EmptyLine(indent=False)])
        body = list(updated_node.body)
        # before the first top-level class or function, i.e. after imports and module constants
        at = next((i for i, s in enumerate(body) if isinstance(s, (cst.ClassDef, cst.FunctionDef))), len(body))
        if at < len(body):
            first = body[at]
            body[at] = first.with_changes(leading_lines=[cst.EmptyLine(indent=False), cst.EmptyLine(indent=False)])
            helper = helper.with_changes(leading_lines=list(first.leading_lines) or helper.leading_lines)
        body.insert(at, helper)
        return updated_node.with_changes(body=body)
