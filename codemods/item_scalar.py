"""item-scalar: read construction-time tensor tables from a host list, not with ``.item()``."""

from __future__ import annotations

from typing import Any, Sequence

import libcst as cst
import libcst.matchers as m
from libcst.helpers import parse_template_statement

from .base import CodemodOptionError, PatchkitCodemod, code, compiled_else_eager

#: In-place tensor methods that would make a "static" table change after construction.
_INPLACE_SUFFIX = "_"


def _self_attr(node: cst.CSTNode, name: str) -> bool:
    return m.matches(node, m.Attribute(value=m.Name("self"), attr=m.Name(name)))


def _single_index(node: cst.CSTNode, attr: str) -> cst.BaseExpression | None:
    """``self.<attr>[i]`` with exactly one plain index: return ``i``."""
    if not isinstance(node, cst.Subscript) or not _self_attr(node.value, attr):
        return None
    if len(node.slice) != 1 or not isinstance(node.slice[0].slice, cst.Index):
        return None
    return node.slice[0].slice.value


def _own_methods(cls: cst.ClassDef) -> list[cst.FunctionDef]:
    """The class's own methods; a nested class's methods belong to that class."""
    return [stmt for stmt in cls.body.body if isinstance(stmt, cst.FunctionDef)]


class ItemScalar(PatchkitCodemod):
    """Replace ``int(self.table[i].item())`` by a lookup in a host copy of the table.

    Hazard: ``.item()`` / ``int(tensor)`` copies a value to the host.  Under
    torch.compile that is a graph break on every call (``Tensor.item`` is not
    captured without ``capture_scalar_outputs``), and the Python int it returns
    then specialises the code after the break, which recompiles once per
    distinct value.  When the table is filled in the constructor and never
    written afterwards, its values are known in Python when the object is built.

    The codemod adds ``self.<table><host_suffix> = self.<table>.tolist()`` at the
    end of the constructor that fills the table (one host copy, outside any
    compiled region) and splits every read ``int(self.<table>[i].item())``,
    ``self.<table>[i].item()`` or ``int(self.<table>[i])`` into
    ``(<host read> if torch.compiler.is_compiling() else <upstream read>)``.
    The host read keeps upstream's conversion (``int(self.<table><host_suffix>[i])``
    where upstream called ``int()``, so a float table truncates the same way;
    ``.tolist()`` entries are what ``.item()`` returns).  Eager runs read the
    live tensor exactly as upstream does, so a table written after construction
    from outside the class, or by ``load_state_dict``, still reads right there;
    compiled code reads the construction-time copy (say so where that matters).

    Options: ``tables`` (attribute names of such tables, required),
    ``class_name`` (limit to one class), ``constructors`` (methods allowed to
    fill the tables), ``host_suffix``.  A table that is assigned, indexed-assigned
    or mutated in place (``.zero_()``, ``.copy_()``, ...) outside the
    constructors is left alone, with a warning: its values are not static.
    """

    NAME = "item-scalar"
    DESCRIPTION = "Read construction-time tensor tables from a host list instead of syncing with .item()."
    LOOKS_FOR = "`int(self.<table>[i].item())` / `self.<table>[i].item()` on a table filled only in the constructor"
    OPTIONS: dict[str, Any] = {
        "tables": (),
        "class_name": None,
        "constructors": ("__init__", "__post_init__"),
        "host_suffix": "_host",
    }

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        if not self.options["tables"]:
            raise CodemodOptionError("codemod 'item-scalar' needs option 'tables' (attribute names)")
        self._classes: list[str] = []
        #: per enclosing class, innermost last: (static tables, tables read outside the constructors)
        self._scopes: list[tuple[set[str], set[str]]] = []
        self._inner_reads: set[int] = set()  # `.item()` calls wrapped by an `int(...)` this codemod rewrites

    @property
    def _static(self) -> set[str]:
        return self._scopes[-1][0] if self._scopes else set()

    @property
    def _read(self) -> set[str]:
        return self._scopes[-1][1] if self._scopes else set()

    # -- scope -------------------------------------------------------------
    def _in_class(self) -> bool:
        wanted = self.options["class_name"]
        return bool(self._classes) and (wanted is None or self._classes[-1] == wanted)

    def _host(self, table: str) -> str:
        return table + self.options["host_suffix"]

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self._classes.append(node.name.value)
        static: set[str] = set()
        if self._in_class():
            static = {t for t in self.options["tables"] if self._is_static(node, t)}
        self._scopes.append((static, {t for t in static if self._has_reads(node, t)}))
        return True

    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef) -> cst.ClassDef:
        self._classes.pop()
        self._scopes.pop()
        return updated_node

    def _is_static(self, cls: cst.ClassDef, table: str) -> bool:
        """Written only in the constructors (assignment, item assignment, in-place call)?"""
        for func in _own_methods(cls):
            if func.name.value in self.options["constructors"]:
                continue
            if self._writes(func, table):
                self.warn(f"item-scalar: self.{table} is written in {func.name.value}(); left as is")
                return False
        return True

    def _has_reads(self, cls: cst.ClassDef, table: str) -> bool:
        """Any ``self.<table>[i].item()`` / ``int(self.<table>[i])`` outside the constructors?"""
        entry = m.Subscript(value=m.Attribute(value=m.Name("self"), attr=m.Name(table)))
        read = m.Call(func=m.Attribute(value=entry, attr=m.Name("item")), args=[]) | m.Call(
            func=m.Name("int"), args=[m.Arg(value=entry, keyword=None)]
        )
        return any(
            m.findall(func, read) for func in _own_methods(cls) if func.name.value not in self.options["constructors"]
        )

    @staticmethod
    def _writes(func: cst.FunctionDef, table: str) -> bool:
        target = m.Attribute(value=m.Name("self"), attr=m.Name(table))
        for assign in m.findall(func, m.Assign() | m.AugAssign() | m.AnnAssign()):
            targets: Sequence[cst.CSTNode]
            if isinstance(assign, cst.Assign):
                targets = [t.target for t in assign.targets]
            else:
                targets = [assign.target]  # type: ignore[attr-defined]
            for t in targets:
                if m.matches(t, target) or m.matches(t, m.Subscript(value=target)):
                    return True
        for call in m.findall(func, m.Call(func=m.Attribute(value=target))):
            name = call.func.attr.value  # type: ignore[attr-defined]
            if name.endswith(_INPLACE_SUFFIX) and not name.endswith("__"):
                return True
        return False

    def warn(self, message: str) -> None:
        self.context.warnings.append(message)

    # -- constructor: add the host copy --------------------------------------
    def leave_FunctionDef(
        self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef
    ) -> cst.FunctionDef:
        self.function_stack.pop()
        if not self._in_class() or self.function_stack or original_node.name.value not in self.options["constructors"]:
            return updated_node
        body = list(updated_node.body.body)
        added = False
        for table in sorted(self._static):
            host_assign = m.Assign(
                targets=[m.AssignTarget(target=m.Attribute(value=m.Name("self"), attr=m.Name(self._host(table))))]
            )
            existing = m.findall(original_node, host_assign)
            if existing:
                self.record_already(existing[0], f"host copy self.{self._host(table)} already built")
                continue
            if table not in self._read:
                continue
            target = m.Attribute(value=m.Name("self"), attr=m.Name(table))
            fills = m.findall(
                original_node, m.Assign(targets=[m.AssignTarget(target=target | m.Subscript(value=target))])
            )
            if not fills:
                continue
            stmt = parse_template_statement("self.{host} = self.{table}.tolist()",
                                            host=cst.Name(self._host(table)), table=cst.Name(table))
            stmt = stmt.with_changes(
                leading_lines=[
                    cst.EmptyLine(
                        comment=cst.Comment(
                            f"# self.{table} is fixed from here on: keep a host copy so reads need no .item()"
                        )
                    )
                ]
            )
            at = len(body)
            if body and m.matches(body[-1], m.SimpleStatementLine(body=[m.Return()])):
                at -= 1
            body.insert(at, stmt)
            added = True
        if not added:
            return updated_node
        return updated_node.with_changes(body=updated_node.body.with_changes(body=body))

    # -- reads ---------------------------------------------------------------
    def _table_index(self, node: cst.BaseExpression) -> tuple[str, cst.BaseExpression] | None:
        for table in self._static:
            index = _single_index(node, table)
            if index is not None:
                return table, index
        return None

    def _host_read(self, original: cst.Call, updated: cst.Call, table: str, index: cst.BaseExpression,
                   as_int: bool) -> cst.IfExp:
        """``(<host read> if torch.compiler.is_compiling() else <upstream read>)``."""
        self.record(original, f"`{code(original)}` -> host list self.{self._host(table)} when compiling")
        self.require_import("torch")
        host: cst.BaseExpression = cst.Subscript(
            value=cst.Attribute(value=cst.Name("self"), attr=cst.Name(self._host(table))),
            slice=[cst.SubscriptElement(slice=cst.Index(value=index))],
        )
        if as_int:
            host = cst.Call(func=cst.Name("int"), args=[cst.Arg(host)])
        return compiled_else_eager(host, updated.with_changes(lpar=[], rpar=[]))

    _ITEM = m.Call(func=m.Attribute(attr=m.Name("item")), args=[])
    _INT = m.Call(func=m.Name("int"), args=[m.Arg(keyword=None)])

    def _in_reads_scope(self) -> bool:
        return (self._in_class() and bool(self.function_stack) and not self.split_depth
                and self.function_stack[-1] not in self.options["constructors"])

    def visit_Call(self, node: cst.Call) -> None:
        # int(self.T[i].item()): the outer int() is the one site; its inner .item() is left to it
        if self._in_reads_scope() and m.matches(node, self._INT):
            arg = node.args[0].value
            if m.matches(arg, self._ITEM) and self._table_index(arg.func.value) is not None:  # type: ignore[attr-defined]
                self._inner_reads.add(id(arg))

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.BaseExpression:
        if not self._in_reads_scope() or id(original_node) in self._inner_reads:
            return updated_node
        if m.matches(original_node, self._INT):
            arg = original_node.args[0].value
            if m.matches(arg, self._ITEM):  # int(self.T[i].item())
                arg = arg.func.value  # type: ignore[attr-defined]
            found = self._table_index(arg)
            if found is not None:  # int(self.T[i]) / int(self.T[i].item())
                return self._host_read(original_node, updated_node, found[0], found[1], as_int=True)
            return updated_node
        if m.matches(original_node, self._ITEM):
            found = self._table_index(original_node.func.value)  # type: ignore[attr-defined]
            if found is not None:  # self.T[i].item()
                return self._host_read(original_node, updated_node, found[0], found[1], as_int=False)
        return updated_node

    def leave_Subscript(self, original_node: cst.Subscript, updated_node: cst.Subscript) -> cst.Subscript:
        if self._in_class() and self.function_stack:
            for table in self.options["tables"]:
                if _single_index(original_node, self._host(table)) is not None:
                    self.record_already(original_node, f"reads host list self.{self._host(table)}")
        return updated_node
