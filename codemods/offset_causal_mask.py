"""offset-causal-mask: build the attention mask from a tensor query offset instead of ``offset == 0``."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.codemod.visitors import AddImportsVisitor
from libcst.helpers import parse_template_expression

from .base import COMPARISON, OFFSET_CAUSAL_MASK_HELPER, PatchkitCodemod, parenthesize
from .base import strip_parens as _strip


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
    and imports ``_patchkit_offset_causal_mask`` from patchkit's runtime helpers
    as ``helper``.  For a Python int offset (no
    cache, eager runs under ``kv-cache-callsites``) the helper returns ``<m>``
    and the call is exactly upstream's.  For a tensor offset the helper builds
    the boolean mask of the attention upstream's call computes over the filled
    prefix ``offset + len(query)``: causal at offset 0 without a mask, every
    filled key at a later offset (upstream passes ``is_causal=False`` there, so
    a multi-token chunk sees the whole chunk), and a passed mask padded over
    the unfilled positions.
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
        new_mask = parse_template_expression(
            "{helper}({mask}, {offset}, {query}, {key})",
            helper=cst.Name(self.options["helper"]), mask=cst.Name(mask_name), offset=offset, query=query, key=key,
        )
        new_causal = parse_template_expression(
            "({mask} is None and not torch.is_tensor({offset}) and {compared} == 0)",
            mask=cst.Name(mask_name), offset=offset, compared=parenthesize(offset, COMPARISON + 1),
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
        if self._need_helper:
            self.import_helper(OFFSET_CAUSAL_MASK_HELPER, None if name == OFFSET_CAUSAL_MASK_HELPER else name)
        return updated_node
