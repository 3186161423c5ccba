"""isnan-guard: take data-dependent validation guards out of compiled graphs."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from .base import CodemodOptionError, PatchkitCodemod
from .base import IS_COMPILING as _IS_COMPILING

_PREDICATES = ("isnan", "isinf", "isneginf", "isposinf")
_REDUCTIONS = ("any", "all")


def _torch_attr(names: tuple[str, ...]) -> m.Attribute:
    return m.Attribute(value=m.Name("torch"), attr=m.OneOf(*(m.Name(n) for n in names)))


def _is_predicate(node: cst.BaseExpression) -> bool:
    # torch.isnan(x)  or  x.isnan()
    if m.matches(node, m.Call(func=_torch_attr(_PREDICATES))):
        return True
    return m.matches(
        node,
        m.Call(func=m.Attribute(attr=m.OneOf(*(m.Name(n) for n in _PREDICATES))), args=[]),
    )


def _is_reduction(node: cst.BaseExpression) -> bool:
    """torch.isnan(x).any(), x.isinf().all(), torch.any(torch.isnan(x)), ..."""
    node = _strip_parens(node)
    if m.matches(node, m.Call(func=m.Attribute(attr=m.OneOf(*(m.Name(n) for n in _REDUCTIONS))))):
        func = node.func  # type: ignore[attr-defined]
        if m.matches(func.value, m.Name("torch")):
            args = node.args  # type: ignore[attr-defined]
            return bool(args) and _is_predicate(args[0].value)
        return _is_predicate(func.value)
    return False


def _strip_parens(node: cst.BaseExpression) -> cst.BaseExpression:
    if getattr(node, "lpar", None):
        return node.with_changes(lpar=[], rpar=[])
    return node


def _is_data_dependent(node: cst.BaseExpression) -> bool:
    """A reduction, its negation, or an and/or made only of those."""
    node = _strip_parens(node)
    if _is_reduction(node):
        return True
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Not):
        return _is_data_dependent(node.expression)
    if isinstance(node, cst.BooleanOperation):
        return _is_data_dependent(node.left) and _is_data_dependent(node.right)
    return False


_GATED = m.BooleanOperation(
    left=m.UnaryOperation(operator=m.Not(), expression=_IS_COMPILING), operator=m.And()
)
_ASSERT_ASYNC = m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("_assert_async")))


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

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        if self.options["mode"] not in ("gate", "assert_async"):
            raise CodemodOptionError(
                f"codemod 'isnan-guard': mode must be 'gate' or 'assert_async', not {self.options['mode']!r}"
            )

    def _in_scope(self) -> bool:
        wanted = self.options["functions"]
        return wanted is None or self.current_function in wanted

    def leave_Expr(self, original_node: cst.Expr, updated_node: cst.Expr) -> cst.Expr:
        call = original_node.value
        if self._in_scope() and m.matches(call, _ASSERT_ASYNC) and call.args:  # type: ignore[attr-defined]
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
        if m.matches(test, _GATED):
            if _is_data_dependent(test.right):  # type: ignore[attr-defined]
                self.record_already(original_node, "guard already gated by torch.compiler.is_compiling()")
            return updated_node
        if not _is_data_dependent(test):
            return updated_node

        src = cst.Module([]).code_for_node(_strip_parens(test))
        self.require_import("torch")
        if self.options["mode"] == "gate":
            right = test
            if isinstance(_strip_parens(test), cst.BooleanOperation) and not test.lpar:  # type: ignore[attr-defined]
                right = test.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
            gated = cst.BooleanOperation(
                left=cst.parse_expression("not torch.compiler.is_compiling()"),
                operator=cst.And(),
                right=right,
            )
            self.record(original_node, f"gated `if {src}: raise`")
            return updated_node.with_changes(test=gated)

        message = _raise_message(raise_stmt)
        if message is None:
            return updated_node  # assert_async needs a message it can carry
        ok = _negate(_strip_parens(test))
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
    expr = _strip_parens(expr)
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
