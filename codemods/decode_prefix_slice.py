"""decode-prefix-slice: pick the decode window from shapes and a host phase flag, not the cache length."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.codemod.visitors import AddImportsVisitor
from libcst.helpers import parse_template_statement

from .base import ADD, CodemodOptionError, PatchkitCodemod, parenthesize
from .base import strip_parens as _strip
from .base import IS_COMPILING as _IS_COMPILING


class DecodePrefixSlice(PatchkitCodemod):
    """Compute the "already cached" prefix length without reading the cache length.

    Hazard: the forward reads the KV-cache length (``cache.current_len(...)``
    -> ``.item()``) to slice ``x = x[..., prefix:]`` down to the new step: a
    graph break on every call, and the Python int it yields specialises the
    rest of the forward, which recompiles on every decode step.

    Pattern, inside ``if <cache> is not None:``: statements that compute
    ``<prefix>`` from the cache, then ``X = X[..., <prefix>:]`` and
    ``assert (<prefix> == 0) or (X.shape[-1] == <step>)`` (the
    one-step-at-a-time decode invariant).  The codemod keeps those statements
    for eager runs and, under torch.compile only, computes the same value from
    that invariant:
    ``<prefix> = 0 if <cache>.<empty_method>() else X.shape[-1] - <step>``,
    where ``<empty_method>()`` is a host bool that flips once per decode (from
    ``static-kv-cache``), so the compiled forward has one graph per phase.
    Eager runs are unchanged and still raise the same AssertionError.

    Derived that way, upstream's assert can no longer fail under compile: a
    caller that fed two new steps would silently get one.  With
    ``prefix_tensor`` (the patch set's expression for upstream's prefix as a
    0-d tensor, read from the cache without ``.item()``) the compiled branch
    also gets ``torch._assert_async(<prefix_tensor> == <prefix>, ...)``: a
    device-side check with no host sync, so a multi-step decode raises a
    ``RuntimeError`` (eager: upstream's ``AssertionError``) instead of dropping
    steps.  Without it the site is still rewritten and the codemod warns.

    Options: ``receivers`` (the upstream's cache parameter names, required),
    ``empty_method`` (added by ``static-kv-cache``), ``prefix_tensor``.
    """

    NAME = "decode-prefix-slice"
    DESCRIPTION = "Under compile, derive the cached-prefix length from shapes and a host phase flag."
    LOOKS_FOR = (
        "`if <cache> is not None:` computing <prefix> from the cache, then `X = X[..., <prefix>:]` and "
        "`assert (<prefix> == 0) or (X.shape[-1] == <step>)`"
    )
    OPTIONS: dict[str, Any] = {"receivers": None, "empty_method": "is_empty", "prefix_tensor": None}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        self.identifiers("receivers")
        self.identifier("empty_method")
        check = self.options["prefix_tensor"]
        if check is not None:
            try:
                cst.parse_expression(check)
            except (cst.ParserSyntaxError, TypeError) as e:
                raise CodemodOptionError(f"codemod 'decode-prefix-slice': prefix_tensor is not an expression: {e}")

    def leave_If(self, original_node: cst.If, updated_node: cst.If) -> cst.If:
        test = original_node.test
        if not m.matches(
            test,
            m.Comparison(left=m.Name(), comparisons=[m.ComparisonTarget(operator=m.IsNot(), comparator=m.Name("None"))]),
        ):
            return updated_node
        cache = test.left.value  # type: ignore[attr-defined]
        if cache not in self.options["receivers"] or not isinstance(updated_node.body, cst.IndentedBlock):
            return updated_node
        body = list(updated_node.body.body)
        found = self._find_slice(body)
        if found is None:
            return updated_node
        at, tensor, prefix = found
        step = self._step(body[at + 1 :], tensor, prefix)
        if step is None:
            return updated_node
        head = body[:at]
        if len(head) == 1 and isinstance(head[0], cst.If) and m.matches(head[0].test, _IS_COMPILING):
            self.record_already(original_node, f"{prefix} already derived from shapes under compile")
            return updated_node
        if not head or not any(
            m.findall(s, m.Call(func=m.Attribute(value=m.Name(cache)))) for s in head
        ) or not any(m.findall(s, m.AssignTarget(target=m.Name(prefix))) for s in head):
            return updated_node
        static = parse_template_statement(
            "{prefix} = 0 if {cache}.{empty}() else {tensor}.shape[-1] - {step}",
            prefix=cst.Name(prefix), cache=cst.Name(cache), empty=cst.Name(self.options["empty_method"]),
            tensor=cst.Name(tensor), step=parenthesize(step, ADD + 1),  # the right operand of `-`
        )
        static = static.with_changes(
            leading_lines=[
                cst.EmptyLine(
                    comment=cst.Comment(
                        "# no cache-length read in compiled code: decode feeds one step at a time (asserted below)"
                    )
                )
            ]
        )
        compiled: list[cst.BaseStatement] = [static]
        check = self.options["prefix_tensor"]
        if check is not None:
            check_node = cst.parse_expression(check)  # option text, always parenthesised as given
            check_node = check_node.with_changes(lpar=[cst.LeftParen(), *check_node.lpar],
                                                 rpar=[*check_node.rpar, cst.RightParen()])
            compiled.append(parse_template_statement(
                'torch._assert_async({check} == {prefix}, '
                '"decode-prefix-slice: compiled decode takes exactly one new step past the cache")',
                check=check_node, prefix=cst.Name(prefix),
            ))
        else:
            self.context.warnings.append(
                f"decode-prefix-slice: no prefix_tensor given: under compile a call that feeds more than one new "
                f"step past {cache} is not caught (upstream asserts it)")
        first = head[0]
        gate = cst.If(
            test=cst.parse_expression("torch.compiler.is_compiling()"),
            body=cst.IndentedBlock(body=compiled),
            orelse=cst.Else(body=cst.IndentedBlock(body=[first.with_changes(leading_lines=[]), *head[1:]])),
            leading_lines=first.leading_lines,
        )
        AddImportsVisitor.add_needed_import(self.context, "torch")
        self.record(original_node, f"{prefix} from {cache} length -> shapes + {cache}.{self.options['empty_method']}() under compile")
        return updated_node.with_changes(body=updated_node.body.with_changes(body=[gate, *body[at:]]))

    @staticmethod
    def _find_slice(body: list[cst.BaseStatement]) -> tuple[int, str, str] | None:
        """First ``X = X[:, ..., P:]``: (index, X, P)."""
        for i, stmt in enumerate(body):
            if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1):
                continue
            assign = stmt.body[0]
            if not m.matches(assign, m.Assign(targets=[m.AssignTarget(target=m.Name())], value=m.Subscript(value=m.Name()))):
                continue
            name = assign.targets[0].target.value  # type: ignore[attr-defined]
            sub = assign.value  # type: ignore[attr-defined]
            if sub.value.value != name:
                continue
            *lead, last = sub.slice
            if not all(isinstance(e.slice, cst.Slice) and e.slice.lower is None and e.slice.upper is None for e in lead):
                continue
            if isinstance(last.slice, cst.Slice) and isinstance(last.slice.lower, cst.Name) and last.slice.upper is None:
                return i, name, last.slice.lower.value
        return None

    @staticmethod
    def _step(rest: list[cst.BaseStatement], tensor: str, prefix: str) -> cst.BaseExpression | None:
        """STEP from ``assert (P == 0) or (X.shape[-1] == STEP)`` after the slice."""
        for stmt in rest:
            if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Assert)):
                continue
            test = _strip(stmt.body[0].test)
            if not (isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.Or)):
                continue
            zero = m.Comparison(left=m.Name(prefix), comparisons=[m.ComparisonTarget(operator=m.Equal(), comparator=m.Integer("0"))])
            shape = m.Comparison(
                left=m.Subscript(
                    value=m.Attribute(value=m.Name(tensor), attr=m.Name("shape")),
                    slice=[m.SubscriptElement(slice=m.Index(value=m.UnaryOperation(operator=m.Minus(), expression=m.Integer("1"))))],
                ),
                comparisons=[m.ComparisonTarget(operator=m.Equal())],
            )
            left, right = _strip(test.left), _strip(test.right)
            if m.matches(left, zero) and m.matches(right, shape):
                return right.comparisons[0].comparator  # type: ignore[attr-defined]
        return None
