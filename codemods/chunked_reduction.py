"""chunked-reduction: compiled float sums and means over a dynamic dim, without inductor's length guard."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.helpers import parse_template_expression

from .base import CHUNKED_REDUCE_HELPER, CodemodOptionError, ScopedCodemod, code, compiled_else_eager, strip_parens

HELPER = CHUNKED_REDUCE_HELPER
REDUCTIONS = ("sum", "nansum", "mean", "nanmean")


_HELPER_CALL = m.Call(func=m.Name(HELPER))


class ChunkedReduction(ScopedCodemod):
    """Reduce a dynamic last dim in chunks when compiled, so its length never splits the graph.

    Hazard: inductor's CPU code generator accumulates a float sum over more
    than 4096 elements with a cascade-sum helper (for precision) and a shorter
    one without, and with a dynamic size it guards on which side of 4096 the
    size falls (``s7 <= 4096`` in a ``TORCH_LOGS=+dynamic`` log, raised from
    ``need_use_acc_helper``).  A normaliser that averages the whole history
    (``torch.nanmean(x, dim=-1)``) therefore compiles one graph for histories
    up to 4096 and another for longer ones, whatever was marked dynamic.

    In functions named ``function`` (methods of class ``class_name`` when
    given), each ``torch.R(x, D[, keepdim=K])`` and ``x.R(D[, keepdim=K])``
    (dim positional or ``dim=D``) whose ``R`` is one of ``reductions`` (sum,
    nansum, mean, nanmean) and whose dim ``D`` is spelled as one of ``dims``
    (default ``-1``; a parameter such as ``dim`` when the upstream passes the
    dim through) becomes ``(_patchkit_chunked_reduce("R", x, D, keepdim=K) if
    torch.compiler.is_compiling() else <upstream's expression>)``: eager runs
    upstream's call unchanged, and compiled code moves ``D`` last, sums
    float32/float16/bfloat16 chunks of 256 (accumulating in float32), then the
    chunk sums; only the chunk count is dynamic.  Other dtypes (float64 sums
    take no cascade helper) and a non-int ``D`` run upstream's reduction.
    Float rounding differs from one long sum (compiled code reorders sums
    anyway).  Calls with any other argument (another dim, ``dtype=``, ``out=``)
    are left alone; sites already split are reported as already fixed.
    """

    NAME = "chunked-reduction"
    DESCRIPTION = "Compiled sums/means over a dynamic dim run in chunks, so inductor never guards on the length."
    LOOKS_FOR = "torch.R(x, dim=D) / x.R(dim=D), R in sum, nansum, mean, nanmean and D in dims, in the named function"
    OPTIONS: dict[str, Any] = {"function": None, "class_name": None, "reductions": REDUCTIONS, "dims": ("-1",)}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        o = self.options
        reductions = self.identifiers("reductions")
        unknown = sorted(set(reductions) - set(REDUCTIONS))
        if unknown:
            raise CodemodOptionError(f"codemod {self.NAME!r}: reductions must be among {', '.join(REDUCTIONS)}; "
                                     f"got {', '.join(unknown)}")
        dims = o["dims"]
        dims = (dims,) if isinstance(dims, str) else tuple(dims or ())
        if not dims or not all(isinstance(d, str) and d.strip() for d in dims):
            raise CodemodOptionError(f"codemod {self.NAME!r}: dims must list dim spellings to match (-1, dim)")
        o["dims"] = tuple(d.replace(" ", "") for d in dims)
        self._rewrote = False

    def _site(self, node: cst.Call) -> tuple[str, cst.BaseExpression, cst.BaseExpression,
                                               cst.BaseExpression | None] | None:
        """``(reduction, x, dim, keepdim)`` for a call of the handled shape, else None."""
        func = node.func
        if not isinstance(func, cst.Attribute) or func.attr.value not in self.options["reductions"]:
            return None
        args = list(node.args)
        if any(a.star for a in args):
            return None
        if m.matches(func.value, m.Name("torch")):
            if not args or args[0].keyword is not None:
                return None
            x, rest = args[0].value, args[1:]
        else:
            x, rest = func.value, args
        names = ("dim", "keepdim")
        given: dict[str, cst.BaseExpression] = {}
        for i, a in enumerate(rest):
            key = a.keyword.value if a.keyword is not None else (names[i] if i < len(names) else None)
            if key not in names or key in given:
                return None
            given[key] = a.value
        dim = given.get("dim")
        if dim is None or code(dim).replace(" ", "") not in self.options["dims"]:
            return None
        return func.attr.value, x, dim, given.get("keepdim")

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        if not self.in_scope():
            return updated_node
        if self.split_depth:
            if m.matches(original_node, _HELPER_CALL):
                self.record_already(original_node, "compiled code already reduces in chunks")
            return updated_node
        site = self._site(updated_node)
        if site is None:
            return updated_node
        reduction, x, dim, keepdim = site
        # the reduced tensor as an argument: its own parentheses go, unless it is a tuple or generator
        x = x if isinstance(strip_parens(x), (cst.Tuple, cst.GeneratorExp)) else strip_parens(x)
        chunked = parse_template_expression(
            f'{HELPER}("{reduction}", {{x}}, {{dim}})' if keepdim is None
            else f'{HELPER}("{reduction}", {{x}}, {{dim}}, keepdim={{keepdim}})',
            x=x, dim=dim, **({} if keepdim is None else {"keepdim": keepdim}),
        )
        self._rewrote = True
        self.require_import("torch")
        self.record(original_node, f"`{code(original_node)}` kept for eager; compiled code sums fixed-size chunks")
        return compiled_else_eager(chunked, updated_node.with_changes(lpar=[], rpar=[])).with_changes(
            lpar=[cst.LeftParen(), *original_node.lpar], rpar=[*original_node.rpar, cst.RightParen()]
        )

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        if not self._rewrote:
            return updated_node
        self.import_helper(HELPER)
        return updated_node
