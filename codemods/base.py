"""The contract every patchkit codemod follows.

A codemod is a LibCST ``VisitorBasedCodemodCommand`` with a stable ``NAME``
(kebab-case, never renamed once released), a one-line ``DESCRIPTION`` and a
class docstring that says which torch.compile hazard it removes.  It records
every site it rewrote (``self.record``) and every site that already has the
fixed shape (``self.record_already``), so the patch-set runner can tell
"applied", "already fixed upstream" and "drifted" apart.

Codemods are generic: they know code shapes, never model names.  What to match
in a given upstream (class names, method names, files) arrives as options from
the patch set in ``patches/``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import libcst as cst
import libcst.matchers as m
from libcst.codemod import CodemodContext, VisitorBasedCodemodCommand
from libcst.helpers import parse_template_expression, parse_template_statement
from libcst.metadata import MetadataWrapper, PositionProvider


#: ``torch.compiler.is_compiling()``: the test that keeps upstream's eager path beside a compiled-only one.
IS_COMPILING_CODE = "torch.compiler.is_compiling()"
IS_COMPILING = m.Call(
    func=m.Attribute(value=m.Attribute(value=m.Name("torch"), attr=m.Name("compiler")), attr=m.Name("is_compiling"))
)
#: ``A if torch.compiler.is_compiling() else B``: a site already split into compiled and eager forms.
COMPILED_ELSE_EAGER = m.IfExp(test=IS_COMPILING)


def code(node: cst.CSTNode) -> str:
    """Source text of one node."""
    return cst.Module([]).code_for_node(node)


def strip_parens(node: cst.BaseExpression) -> cst.BaseExpression:
    """The expression without its own parentheses."""
    return node.with_changes(lpar=[], rpar=[]) if getattr(node, "lpar", None) else node


# -- building code from matched nodes ----------------------------------------------------------------------
# Replacement code is built from nodes (``libcst.helpers.parse_template_*`` with node placeholders, or node
# constructors), never by formatting an operand's source into a string: an operand spliced into a tighter context
# (``X.shape[0]``, ``B - X``, ``X == 0``) is wrapped in parentheses by ``parenthesize`` when it needs them.

#: Binding strength of an expression, loosest first (the Python grammar's precedence table).
NAMED, LAMBDA, IFEXP, OR, AND, NOT, COMPARISON, BIT_OR, BIT_XOR, BIT_AND, SHIFT, ADD, MUL, UNARY, POWER, AWAIT, ATOM = (
    range(17)
)
_BINARY = {
    cst.BitOr: BIT_OR, cst.BitXor: BIT_XOR, cst.BitAnd: BIT_AND, cst.LeftShift: SHIFT, cst.RightShift: SHIFT,
    cst.Add: ADD, cst.Subtract: ADD, cst.Multiply: MUL, cst.Divide: MUL, cst.FloorDivide: MUL, cst.Modulo: MUL,
    cst.MatrixMultiply: MUL, cst.Power: POWER,
}


def precedence(node: cst.BaseExpression) -> int:
    """How tightly ``node`` binds as written (``ATOM`` when it carries its own parentheses)."""
    if getattr(node, "lpar", None):
        return ATOM
    if isinstance(node, cst.BinaryOperation):
        return _BINARY[type(node.operator)]
    if isinstance(node, cst.BooleanOperation):
        return AND if isinstance(node.operator, cst.And) else OR
    if isinstance(node, cst.UnaryOperation):
        return NOT if isinstance(node.operator, cst.Not) else UNARY
    levels = {cst.Comparison: COMPARISON, cst.IfExp: IFEXP, cst.Lambda: LAMBDA, cst.Await: AWAIT,
              cst.NamedExpr: NAMED, cst.Yield: NAMED, cst.StarredElement: NAMED, cst.GeneratorExp: NAMED}
    if isinstance(node, cst.Tuple):  # a bare ``a, b`` (with no parentheses of its own) binds loosest of all
        return NAMED
    return next((level for cls, level in levels.items() if isinstance(node, cls)), ATOM)


def parenthesize(node: cst.BaseExpression, at_least: int = ATOM) -> cst.BaseExpression:
    """``node`` wrapped in parentheses when it binds looser than ``at_least``, the context it goes into: the
    default ``ATOM`` is the receiver of ``.attr``, ``[...]`` or ``(...)``; ``MUL`` the left operand of ``*``,
    ``MUL + 1`` its right one; ``COMPARISON + 1`` an operand of ``==``.  Names, attributes, calls, subscripts,
    literals and parenthesised expressions are left as they are."""
    if precedence(node) >= at_least:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def compiled_else_eager(compiled: cst.BaseExpression, eager: cst.BaseExpression) -> cst.IfExp:
    """``(compiled if torch.compiler.is_compiling() else eager)``: eager keeps upstream's expression verbatim."""
    return cst.IfExp(
        test=cst.parse_expression(IS_COMPILING_CODE), body=parenthesize(compiled, OR), orelse=parenthesize(eager, LAMBDA),
        lpar=[cst.LeftParen()], rpar=[cst.RightParen()],
    )


# -- runtime helpers -----------------------------------------------------------------------------------------
# The functions patched code calls live in one real module, ``runtime_helpers.py`` beside this file.  apply copies
# it into the patched tree once per top-level package as ``<package>/HELPERS_MODULE.py``, and a codemod that
# routes or marks a call imports the helper it uses from there (``import_helper``).  The names below are the ones
# codemods write and match, and that patch sets call; ``runtime_helpers`` defines each of them.

#: the module name of the runtime helpers inside a patched tree
HELPERS_MODULE = "_patchkit_helpers"
#: ``context.scratch`` key of the rewritten module's package (``run_codemod(package=...)``).  Not the context's
#: ``full_package_name``: given that, LibCST's import adder turns a relative import into an absolute one, and the
#: relative import keeps working under another top-level name (a wheel that renames the package).
PACKAGE_KEY = "patchkit.package"
#: ``_patchkit_is_compiled(step)``: does ``step`` run under torch.compile?
IS_COMPILED_HELPER = "_patchkit_is_compiled"
#: ``_patchkit_pad_single_row(step, ...)``: a step callee routed through pad-single-row's helper.
PAD_SINGLE_ROW_HELPER = "_patchkit_pad_single_row"
#: ``_patchkit_eager_when(step, lambda: ...)``: a step callee routed through eager-when's helper.
EAGER_WHEN_HELPER = "_patchkit_eager_when"
#: ``_patchkit_mark_dynamic(tensor, dims)``: dynamic-step-inputs' mark on a step input.
MARK_DYNAMIC_HELPER = "_patchkit_mark_dynamic"
#: ``_patchkit_dynamic_int(step, value)``: dynamic-step-inputs' int argument.
DYNAMIC_INT_HELPER = "_patchkit_dynamic_int"
#: ``_patchkit_contiguous(tensor)``: contiguous-step-inputs' canonical strides.
CONTIGUOUS_HELPER = "_patchkit_contiguous"
#: ``_patchkit_chunked_reduce(reduction, x, dim[, keepdim])``: chunked-reduction's compiled reduction.
CHUNKED_REDUCE_HELPER = "_patchkit_chunked_reduce"
#: ``_patchkit_offset_causal_mask(mask, offset, query, key)``: offset-causal-mask's mask.
OFFSET_CAUSAL_MASK_HELPER = "_patchkit_offset_causal_mask"
#: every helper name a codemod may import
HELPER_NAMES = (IS_COMPILED_HELPER, PAD_SINGLE_ROW_HELPER, EAGER_WHEN_HELPER, MARK_DYNAMIC_HELPER, DYNAMIC_INT_HELPER,
                CONTIGUOUS_HELPER, CHUNKED_REDUCE_HELPER, OFFSET_CAUSAL_MASK_HELPER)
#: a step callee routed through either router: ``ROUTER(f, ...)``
ROUTED = m.Call(func=m.OneOf(m.Name(PAD_SINGLE_ROW_HELPER), m.Name(EAGER_WHEN_HELPER)))


def helpers_source() -> bytes:
    """The runtime helpers module, as apply copies it into a patched tree."""
    return (Path(__file__).with_name("runtime_helpers.py")).read_bytes()


def helpers_level(package: str | None) -> int:
    """Dots of the relative import of ``HELPERS_MODULE`` from a module of ``package`` (``"toto.inference"``: 2,
    up to ``toto``); 0, an absolute import, for a top-level module or when the package is not known."""
    return len(package.split(".")) if package else 0


def helpers_path(rel: str) -> str:
    """Where the runtime helpers a rewritten tree file (``toto/inference/forecaster.py``) imports live: its
    top-level package's ``_patchkit_helpers.py`` (``toto/_patchkit_helpers.py``), the module ``helpers_level``
    counts the dots up to; the tree's root for a top-level file."""
    top = rel.split("/")[0] if "/" in rel else ""
    return f"{top}/{HELPERS_MODULE}.py" if top else f"{HELPERS_MODULE}.py"


def _is_helpers_import(stmt: cst.CSTNode, level: int) -> bool:
    return m.matches(stmt, m.SimpleStatementLine(body=[m.ImportFrom(module=m.Name(HELPERS_MODULE))])) and len(
        stmt.body[0].relative) == level  # type: ignore[attr-defined]


def _is_import_line(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body)


def add_helper_imports(module: cst.Module, names: dict[str, str | None], level: int) -> cst.Module:
    """``module`` with ``from <level dots>_patchkit_helpers import <names>`` (name -> local name or None): merged
    into the module's import of the helpers when it has one, else a new statement after the last import before
    the first definition (or after the docstring).  Names already imported are not imported again."""
    body = list(module.body)
    alias = lambda name, asname: cst.ImportAlias(  # noqa: E731
        name=cst.Name(name), asname=cst.AsName(name=cst.Name(asname)) if asname else None)
    at = next((i for i, stmt in enumerate(body) if _is_helpers_import(stmt, level)), None)
    if at is not None:
        line = body[at]
        have = {(code(a.name), a.asname.name.value if a.asname else None): a  # type: ignore[union-attr]
                for a in line.body[0].names}  # type: ignore[attr-defined]
        merged = {**have, **{(n, a): have.get((n, a)) or alias(n, a) for n, a in names.items()}}
        if len(merged) == len(have):
            return module
        ordered = [a.with_changes(comma=cst.MaybeSentinel.DEFAULT) for _, a in sorted(merged.items(), key=lambda kv: kv[0][0])]
        body[at] = line.with_changes(body=[line.body[0].with_changes(names=ordered, lpar=None, rpar=None)])
        return module.with_changes(body=body)
    stmt = cst.SimpleStatementLine(body=[cst.ImportFrom(
        module=cst.Name(HELPERS_MODULE), relative=[cst.Dot() for _ in range(level)],
        names=[alias(n, names[n]) for n in sorted(names)])])
    first_def = next((i for i, s in enumerate(body) if isinstance(s, (cst.FunctionDef, cst.ClassDef))), len(body))
    imports = [i for i in range(first_def) if _is_import_line(body[i])]
    if imports:
        at = imports[-1] + 1
    else:  # after the docstring, if any
        at = 1 if body and m.matches(body[0], m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString())])) else 0
    body.insert(at, stmt)
    after = body[at + 1] if at + 1 < len(body) else None
    if isinstance(after, (cst.FunctionDef, cst.ClassDef)) and not after.leading_lines:
        body[at + 1] = after.with_changes(leading_lines=[cst.EmptyLine(indent=False)] * 2)
    return module.with_changes(body=body)


# -- step outputs handed to the next step ---------------------------------------------------------------------
def target_names(target: cst.BaseExpression) -> list[str]:
    """The plain names an assignment target binds: ``a`` and ``b`` for ``a, (b, c.d) = ...``."""
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        out: list[str] = []
        for el in target.elements:
            out.extend(target_names(el.value))
        return out
    return []


def clone_line(name: str) -> cst.SimpleStatementLine:
    """``<name> = <name>.clone()``."""
    return parse_template_statement("{name} = {name}.clone()", name=cst.Name(name))


def is_clone_of(stmt: cst.CSTNode, name: str) -> bool:
    """``name = name.clone()``."""
    return m.matches(
        stmt,
        m.SimpleStatementLine(
            body=[
                m.Assign(
                    targets=[m.AssignTarget(target=m.Name(name))],
                    value=m.Call(func=m.Attribute(value=m.Name(name), attr=m.Name("clone")), args=[]),
                )
            ]
        ),
    )


@dataclass(frozen=True)
class Site:
    """Where a codemod matched: 1-based line of the matched node and what it was."""

    line: int
    construct: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.construct}"


class CodemodOptionError(ValueError):
    """A codemod was given options it does not understand."""


class PatchkitCodemod(VisitorBasedCodemodCommand):
    """Base class: subclasses set NAME, DESCRIPTION and LOOKS_FOR."""

    NAME: ClassVar[str] = ""
    DESCRIPTION: ClassVar[str] = ""
    #: Human words for the construct the codemod searches, used in drift errors.
    LOOKS_FOR: ClassVar[str] = ""
    #: Option names (with defaults) the codemod accepts from a patch set.
    OPTIONS: ClassVar[dict[str, Any]] = {}

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, context: CodemodContext, **options: Any) -> None:
        super().__init__(context)
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise CodemodOptionError(
                f"codemod {self.NAME!r} does not accept option(s) {', '.join(unknown)}; "
                f"it accepts: {', '.join(sorted(self.OPTIONS)) or 'none'}"
            )
        self.options: dict[str, Any] = {**self.OPTIONS, **options}
        self.matches: list[Site] = []
        self.already: list[Site] = []
        self._top_imports: set[str] = set()
        #: runtime helpers the rewrite calls: name -> local name (None: the same)
        self._helper_imports: dict[str, str | None] = {}
        #: names of the enclosing function definitions, innermost last
        self.function_stack: list[str] = []
        #: > 0 inside ``(A if torch.compiler.is_compiling() else B)``: a site already split into compiled and eager
        self.split_depth = 0

    @classmethod
    def add_args(cls, arg_parser) -> None:
        """Every option as ``--name VALUE`` for ``python -m libcst.tool codemod -x``: a JSON value (list,
        object, number, true/false) or else a plain string; options not given keep their defaults."""
        import argparse
        import json

        def value(text: str) -> Any:
            try:
                return json.loads(text)
            except ValueError:
                return text

        for name in cls.OPTIONS:
            arg_parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=value, default=argparse.SUPPRESS,
                                    help=f"patch-set option {name!r} (JSON or a string)")

    def resolves_to(self, node: cst.CSTNode, *names: str) -> bool:
        """Does ``node`` (a name or attribute chain of the parsed source) name one of ``names``, for example
        ``torch.isnan``, whatever the import spelling: ``import torch as th`` / ``th.isnan``, ``from torch
        import isnan``?  Needs ``QualifiedNameProvider`` in the codemod's ``METADATA_DEPENDENCIES``."""
        from libcst.metadata import QualifiedNameProvider

        try:
            found = self.get_metadata(QualifiedNameProvider, node, set())
        except KeyError:  # a node the transform created: not in the source's scopes
            return False
        return any(q.name in names for q in found)

    def require_import(self, module: str) -> None:
        """Make sure ``import <module>`` exists, without a second pass when it already does."""
        if module not in self._top_imports:
            from libcst.codemod.visitors import AddImportsVisitor

            AddImportsVisitor.add_needed_import(self.context, module)

    def import_helper(self, name: str, asname: str | None = None) -> None:
        """Make sure the rewritten module has ``from <dots>_patchkit_helpers import <name> [as <asname>]``: relative
        to the module's top-level package when ``run_codemod`` was told the module's package (apply tells it),
        else absolute.  One import statement holds every helper a module uses, whichever codemods added them."""
        self._helper_imports[name] = asname

    @contextmanager
    def _handle_metadata_reference(self, module: cst.Module) -> Iterator[cst.Module]:
        """LibCST's own, less its deep copy of ``module`` (about 15 % of a codemod's time): ``run_codemod`` and
        ``libcst.tool`` hand each codemod a module freshly parsed from source, which holds no node twice and which
        nothing else reads, so positions resolve on the module itself."""
        old = self.context.wrapper
        wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
        with self.resolve(wrapper):
            self.context = replace(self.context, wrapper=wrapper)
            try:
                yield wrapper.module
            finally:
                self.context = replace(self.context, wrapper=old)

    def transform_module(self, tree: cst.Module) -> cst.Module:
        tree = super().transform_module(tree)
        if not self._helper_imports:
            return tree
        package = self.context.scratch.get(PACKAGE_KEY, self.context.full_package_name)
        return add_helper_imports(tree, self._helper_imports, helpers_level(package))

    def clone_after(self, stmt: cst.BaseStatement, original: cst.BaseStatement, following: cst.BaseStatement | None,
                    names: list[str], what: str) -> list[cst.BaseStatement]:
        """``stmt`` followed by ``name = name.clone()`` for each of ``names`` (names it binds from a compiled call)
        that the next statement does not already clone; each site recorded as applied or already fixed against
        ``original``, with ``what`` naming the call (``"the compiled call"``)."""
        out = [stmt]
        for name in names:
            if following is not None and is_clone_of(following, name):
                self.record_already(original, f"`{name}` already cloned after {what}")
                continue
            out.append(clone_line(name))
            self.record(original, f"clone `{name}` after {what}")
        return out

    def visit_Module(self, node: cst.Module) -> None:
        self._top_imports = {
            cst.Module([]).code_for_node(alias.name)
            for stmt in node.body
            if isinstance(stmt, cst.SimpleStatementLine)
            for small in stmt.body
            if isinstance(small, cst.Import)
            for alias in small.names
            if alias.asname is None
        }

    def visit_IfExp(self, node: cst.IfExp) -> None:
        if m.matches(node, COMPILED_ELSE_EAGER):
            self.split_depth += 1

    def leave_IfExp(self, original_node: cst.IfExp, updated_node: cst.IfExp) -> cst.BaseExpression:
        if m.matches(original_node, COMPILED_ELSE_EAGER):
            self.split_depth -= 1
        return updated_node

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.function_stack.append(node.name.value)

    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef) -> cst.FunctionDef:
        self.function_stack.pop()
        return updated_node

    def identifier(self, *keys: str) -> None:
        """Refuse each option in ``keys`` unless it is one identifier (a name the codemod matches or writes)."""
        for key in keys:
            value = self.options[key]
            if not isinstance(value, str) or not value.isidentifier():
                raise CodemodOptionError(f"codemod {self.NAME!r}: {key} must be an identifier")

    def identifiers(self, key: str, *, required: bool = True) -> tuple[str, ...]:
        """Normalise option ``key`` to a tuple of identifiers (a bare string is one; empty only when not
        ``required``), or refuse it."""
        value = self.options[key]
        value = (value,) if isinstance(value, str) else tuple(value or ())
        if (required and not value) or not all(isinstance(v, str) and v.isidentifier() for v in value):
            raise CodemodOptionError(
                f"codemod {self.NAME!r}: {key} must name {'at least one identifier' if required else 'identifiers'}"
            )
        self.options[key] = value
        return value

    def dims(self, value: Any, what: str, *, required: bool = True) -> tuple[int, ...]:
        """``value`` (an int or a sequence of them) as a tuple of non-negative dimension indices, or refuse it."""
        value = (value,) if isinstance(value, int) and not isinstance(value, bool) else tuple(value or ())
        if (required and not value) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                               for d in value):
            raise CodemodOptionError(f"codemod {self.NAME!r}: {what} must be non-negative indices")
        return value

    def expression(self, key: str) -> cst.BaseExpression | None:
        """Option ``key`` (source text such as ``"self.model"``) parsed as an expression; None when not given."""
        value = self.options[key]
        if value is None:
            return None
        try:
            return cst.parse_expression(value)
        except (cst.ParserSyntaxError, TypeError):
            raise CodemodOptionError(f"codemod {self.NAME!r}: {key} must be an expression (`self.model`)") from None

    @property
    def current_function(self) -> str | None:
        """The innermost enclosing function's name, None at module or class level."""
        return self.function_stack[-1] if self.function_stack else None

    # -- bookkeeping -------------------------------------------------------
    def _line(self, node: cst.CSTNode) -> int:
        try:
            return self.get_metadata(PositionProvider, node).start.line
        except KeyError:  # nodes created by the transform have no position
            return 0

    def record(self, node: cst.CSTNode, construct: str) -> None:
        self.matches.append(Site(self._line(node), construct))

    def record_already(self, node: cst.CSTNode, construct: str) -> None:
        self.already.append(Site(self._line(node), construct))


class ScopedCodemod(PatchkitCodemod):
    """Base for codemods that rewrite inside one named function (option ``function``), of one class when option
    ``class_name`` is given: ``in_scope()`` says whether the transform is there now."""

    def __init__(self, context: CodemodContext, **options: Any) -> None:
        super().__init__(context, **options)
        self.identifier("function")
        if self.options["class_name"] is not None:
            self.identifier("class_name")
        #: names of the enclosing class definitions, innermost last
        self.class_stack: list[str] = []

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.class_stack.append(node.name.value)

    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef) -> cst.ClassDef:
        self.class_stack.pop()
        return updated_node

    def in_scope(self) -> bool:
        o = self.options
        if self.current_function != o["function"]:
            return False
        return o["class_name"] is None or (bool(self.class_stack) and self.class_stack[-1] == o["class_name"])


class StepCallCodemod(PatchkitCodemod):
    """Base for codemods that rewrite calls to named step functions inside one named function.

    Options ``function`` (an identifier) and ``calls`` (identifiers; ``obj.<call>(...)`` or ``<call>(...)``)
    are validated here; ``step_call(node)`` returns the call's source when it is one of them, inside
    ``function``, else None.
    """

    def __init__(self, context: CodemodContext, **options: Any) -> None:
        super().__init__(context, **options)
        self.identifier("function")
        self.identifiers("calls")

    def step_call(self, node: cst.Call) -> str | None:
        if self.current_function != self.options["function"]:
            return None
        names = m.OneOf(*(m.Name(c) for c in self.options["calls"]))
        func = self.callee(node)
        if not m.matches(func, m.OneOf(m.Attribute(attr=names), names)):
            return None
        return cst.Module([]).code_for_node(func)

    def assigned_target(self, node: cst.Assign) -> str | None:
        """Inside ``function``, the source of ``node``'s first target named in option ``assigned``
        (``'kwargs["x"]'``: an input handed over as ``call(**kwargs)``), else None."""
        if self.current_function != self.options["function"]:
            return None
        named = [t for t in (code(t.target) for t in node.targets) if t in self.options["assigned"]]
        return named[0] if named else None

    @staticmethod
    def unrouted(node: cst.Call) -> tuple[list[str], cst.BaseExpression]:
        """The helpers ``node``'s callee is routed through (``ROUTER(f, ...)(...)``, nested too; outermost first),
        and what it calls in the end."""
        routers: list[str] = []
        func = node.func
        while m.matches(func, ROUTED) and func.args:  # type: ignore[union-attr]
            routers.append(func.func.value)  # type: ignore[union-attr]
            func = func.args[0].value  # type: ignore[union-attr]
        return routers, func

    @classmethod
    def callee(cls, node: cst.Call) -> cst.BaseExpression:
        """What ``node`` calls: ``f`` for ``f(...)`` and for ``ROUTER(f, ...)(...)``, a step call that a codemod
        routed through a helper (``pad-single-row``, ``eager-when``; nested too), so codemods compose in any order."""
        return cls.unrouted(node)[1]


class RoutingCodemod(StepCallCodemod):
    """Base for codemods that route step calls through a runtime helper: ``<callee>(...)`` becomes
    ``HELPER(<callee>, <router_args>)(...)`` and the module imports ``HELPER`` from the runtime helpers.

    Option ``gate`` (source text such as ``"self.model"``, the module whose compilation counts) is normalised
    here; subclasses give ``router_args()`` and the words of their reports (``already_text``, ``describe``).
    """

    HELPER: ClassVar[str] = ""

    def __init__(self, context: CodemodContext, **options: Any) -> None:
        super().__init__(context, **options)
        gate = self.expression("gate")
        self.options["gate"] = None if gate is None else code(gate)
        self._wrapped = False

    def router_args(self) -> str:
        """Source of the helper's arguments after the callee, leading comma included."""
        raise NotImplementedError

    def describe(self, call_name: str, router: cst.BaseExpression) -> str:
        """The report line for a routed call."""
        return f"{call_name}(...) -> `{code(router)}(...)`"

    def already_text(self, call_name: str) -> str:
        """The report line for a call already routed through ``HELPER``."""
        raise NotImplementedError

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        call_name = self.step_call(original_node)
        if call_name is None:
            return updated_node
        if self.HELPER in self.unrouted(updated_node)[0]:
            self.record_already(original_node, self.already_text(call_name))
            return updated_node
        # router_args() is option text only: the matched callee goes in as a node
        router = parse_template_expression(f"{self.HELPER}({{callee}}{self.router_args()})", callee=updated_node.func)
        self._wrapped = True
        self.record(original_node, self.describe(call_name, router))
        return updated_node.with_changes(func=router)

    def leave_Module(self, original_node: cst.Module, updated_node: cst.Module) -> cst.Module:
        if not self._wrapped:
            return updated_node
        self.import_helper(self.HELPER)
        return updated_node


@dataclass(frozen=True)
class CodemodResult:
    """Outcome of running one codemod over one source text."""

    name: str
    code: str
    changed: bool
    matches: Sequence[Site] = field(default_factory=tuple)
    already: Sequence[Site] = field(default_factory=tuple)
    #: what the codemod wrote to ``context.warnings``: sites it left as they are, checks it could not keep
    warnings: Sequence[str] = field(default_factory=tuple)


def run_codemod(
    cls: type[PatchkitCodemod],
    source: str,
    *,
    filename: str = "<string>",
    options: dict[str, Any] | None = None,
    package: str | None = None,
) -> CodemodResult:
    """Parse ``source``, apply ``cls`` and return the new code with its match report.

    ``package`` is the dotted package the source's module belongs to (``"toto.inference"``), so runtime helpers
    are imported relative to its top-level package; without it they are imported absolutely.

    Raises ``libcst.ParserSyntaxError`` when the source does not parse and
    ``CodemodOptionError`` on unknown options.  Line endings, comments and
    formatting outside the rewritten nodes are preserved byte for byte.
    """
    module = cst.parse_module(source)
    context = CodemodContext(filename=filename)
    if package is not None:
        context.scratch[PACKAGE_KEY] = package
    command = cls(context, **(options or {}))
    new_module = command.transform_module(module)
    code = new_module.code
    return CodemodResult(
        name=cls.NAME,
        code=code,
        changed=code != source,
        matches=tuple(command.matches),
        already=tuple(command.already),
        warnings=tuple(context.warnings),
    )
