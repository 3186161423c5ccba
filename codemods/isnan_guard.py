"""isnan-guard: take data-dependent validation guards out of compiled graphs."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from libcst.metadata import PositionProvider, QualifiedNameProvider

from .base import NOT, CodemodOptionError, PatchkitCodemod, code, parenthesize, strip_parens

_PREDICATES = ("isnan", "isinf", "isneginf", "isposinf")
_REDUCTIONS = ("any", "all")


class _Torch:
    """Recognises the guard's torch calls by qualified name (``torch.isnan``, ``th.isnan`` after ``import torch
    as th``, ``isnan`` after ``from torch import isnan``) through the codemod's scope metadata."""

    def __init__(self, codemod: PatchkitCodemod) -> None:
        self.codemod = codemod

    def call_to(self, node: cst.BaseExpression, names: tuple[str, ...]) -> bool:
        return isinstance(node, cst.Call) and self.codemod.resolves_to(node.func, *(f"torch.{n}" for n in names))

    def is_predicate(self, node: cst.BaseExpression) -> bool:
        # torch.isnan(x)  or  x.isnan()
        if self.call_to(node, _PREDICATES):
            return True
        return m.matches(node, m.Call(func=m.Attribute(attr=m.OneOf(*(m.Name(n) for n in _PREDICATES))), args=[]))

    def is_reduction(self, node: cst.BaseExpression) -> bool:
        """torch.isnan(x).any(), x.isinf().all(), torch.any(torch.isnan(x)), ..."""
        node = strip_parens(node)
        if self.call_to(node, _REDUCTIONS):
            args = node.args  # type: ignore[attr-defined]
            return bool(args) and self.is_predicate(args[0].value)
        if m.matches(node, m.Call(func=m.Attribute(attr=m.OneOf(*(m.Name(n) for n in _REDUCTIONS))))):
            return self.is_predicate(node.func.value)  # type: ignore[attr-defined]
        return False

    def is_data_dependent(self, node: cst.BaseExpression) -> bool:
        """A reduction, its negation, or an and/or made only of those."""
        node = strip_parens(node)
        if self.is_reduction(node):
            return True
        if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Not):
            return self.is_data_dependent(node.expression)
        if isinstance(node, cst.BooleanOperation):
            return self.is_data_dependent(node.left) and self.is_data_dependent(node.right)
        return False

    def is_gated(self, node: cst.BaseExpression) -> bool:
        """``not torch.compiler.is_compiling() and ...``"""
        return (m.matches(node, m.BooleanOperation(left=m.UnaryOperation(operator=m.Not(), expression=m.Call()),
                                                   operator=m.And()))
                and self.codemod.resolves_to(node.left.expression.func,  # type: ignore[attr-defined]
                                             "torch.compiler.is_compiling"))


def _raise_only(body: cst.BaseSuite) -> cst.Raise | None:
    """The single ``raise`` statement a guard body consists of, else None."""
    if isinstance(body, cst.SimpleStatementSuite):
        stmts = body.body
    elif isinstance(body, cst.IndentedBlock) and len(body.body) == 1:
        line = body.body[0]
        if not isinstance(line, cst.SimpleStatementLine):
            return None
        stmts = line.body
    else:
        return None
    if len(stmts) == 1 and isinstance(stmts[0], cst.Raise):
        return stmts[0]
    return None


class IsnanGuard(PatchkitCodemod):
    """Gate ``if torch.isnan(x).any(): raise ...`` validation guards.

    Hazard: Python ``if`` on a tensor reduction needs the value on the host, so
    Dynamo graph-breaks there (a data-dependent branch) on every forward.

    ``mode="gate"`` (default) rewrites the test to
    ``not torch.compiler.is_compiling() and <test>``: eager runs still raise
    the very same exception, compiled graphs skip the check entirely.
    ``mode="assert_async"`` replaces the guard by
    ``torch._assert_async(torch.logical_not(<test>), "<message>")``: the check
    stays inside compiled graphs, but it raises ``RuntimeError`` (an
    asynchronous device-side assert on CUDA) instead of the original exception.

    Matches ``torch.isnan/isinf/isposinf/isneginf(x)`` or ``x.isnan()`` reduced
    by ``.any()/.all()`` or ``torch.any/all(...)``, negations and and/or chains
    of those, where the ``if`` has no ``else`` and its body is one ``raise``.
    Option ``functions`` limits the rewrite to guards inside the named functions.
    """

    NAME = "isnan-guard"
    DESCRIPTION = "Gate data-dependent isnan/isinf validation guards so compiled graphs do not break on them."
    LOOKS_FOR = "`if torch.isnan(...).any(): raise ...` (isnan/isinf reduced by any/all, no else, body one raise)"
    OPTIONS: dict[str, Any] = {"mode": "gate", "functions": None}

    METADATA_DEPENDENCIES = (PositionProvider, QualifiedNameProvider)

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        self._torch = _Torch(self)
        if self.options["mode"] not in ("gate", "assert_async"):
            raise CodemodOptionError(
                f"codemod 'isnan-guard': mode must be 'gate' or 'assert_async', not {self.options['mode']!r}"
            )

    def _in_scope(self) -> bool:
        wanted = self.options["functions"]
        return wanted is None or self.current_function in wanted

    def leave_Expr(self, original_node: cst.Expr, updated_node: cst.Expr) -> cst.Expr:
        call = original_node.value
        if self._in_scope() and self._torch.call_to(call, ("_assert_async",)) and call.args:  # type: ignore[attr-defined]
            checked = call.args[0].value  # type: ignore[attr-defined]
            if m.findall(checked, m.Call(func=m.Attribute(attr=m.OneOf(*(m.Name(n) for n in _PREDICATES))))):
                self.record_already(original_node, "guard already a torch._assert_async check")
        return updated_node

    def leave_If(self, original_node: cst.If, updated_node: cst.If) -> cst.BaseStatement | cst.RemovalSentinel:
        if not self._in_scope() or original_node.orelse is not None:
            return updated_node
        raise_stmt = _raise_only(original_node.body)
        if raise_stmt is None:
            return updated_node
        test = original_node.test
        if self._torch.is_gated(test):
            if self._torch.is_data_dependent(test.right):  # type: ignore[attr-defined]
                self.record_already(original_node, "guard already gated by torch.compiler.is_compiling()")
            return updated_node
        if not self._torch.is_data_dependent(test):
            return updated_node

        src = code(strip_parens(test))
        self.require_import("torch")
        if self.options["mode"] == "gate":
            gated = cst.BooleanOperation(
                left=cst.parse_expression("not torch.compiler.is_compiling()"),
                operator=cst.And(),
                right=parenthesize(test, NOT),  # the right operand of `and`: `a or b`, `x if c else y` need parens
            )
            self.record(original_node, f"gated `if {src}: raise`")
            return updated_node.with_changes(test=gated)

        message = _raise_message(raise_stmt)
        if message is None:
            return updated_node  # assert_async needs a message it can carry
        ok = _negate(strip_parens(test))
        call = cst.Call(
            func=cst.parse_expression("torch._assert_async"),
            args=[cst.Arg(ok, comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))), cst.Arg(message)],
        )
        self.record(original_node, f"replaced `if {src}: raise` by torch._assert_async")
        return cst.SimpleStatementLine(
            body=[cst.Expr(call)], leading_lines=original_node.leading_lines
        )


def _raise_message(raise_stmt: cst.Raise) -> cst.BaseExpression | None:
    exc = raise_stmt.exc
    if isinstance(exc, cst.Call) and len(exc.args) == 1 and exc.args[0].keyword is None:
        value = exc.args[0].value
        if isinstance(value, (cst.SimpleString, cst.ConcatenatedString)):
            return value
    return None


def _negate(test: cst.BaseExpression) -> cst.BaseExpression:
    """Tensor expression that is true when the guard must NOT raise."""
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        return _to_tensor(test.expression)
    return cst.Call(func=cst.parse_expression("torch.logical_not"), args=[cst.Arg(_to_tensor(test))])


def _to_tensor(expr: cst.BaseExpression) -> cst.BaseExpression:
    expr = strip_parens(expr)
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Not):
        return cst.Call(func=cst.parse_expression("torch.logical_not"), args=[cst.Arg(_to_tensor(expr.expression))])
    if isinstance(expr, cst.BooleanOperation):
        fn = "torch.logical_and" if isinstance(expr.operator, cst.And) else "torch.logical_or"
        return cst.Call(
            func=cst.parse_expression(fn),
            args=[
                cst.Arg(_to_tensor(expr.left), comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))),
                cst.Arg(_to_tensor(expr.right)),
            ],
        )
    return expr
