"""rename-imports: a tree that imports itself by a bare top-level name, shipped under another name."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m

from .base import CodemodOptionError, PatchkitCodemod, code

#: ``sys.path.append(...)`` / ``sys.path.insert(...)`` as a statement of its own
_PATH_EDIT = m.SimpleStatementLine(body=[m.Expr(m.Call(func=m.Attribute(
    value=m.Attribute(value=m.Name("sys"), attr=m.Name("path")), attr=m.Name("append") | m.Name("insert"))))])


def _dotted(parts: list[str]) -> cst.Attribute | cst.Name:
    node: cst.Attribute | cst.Name = cst.Name(parts[0])
    for part in parts[1:]:
        node = cst.Attribute(value=node, attr=cst.Name(part))
    return node


class RenameImports(PatchkitCodemod):
    """Rewrite a tree's imports of its own top-level package to the name it ships under.

    Hazard: an upstream with no packaging that imports itself by a bare,
    generic top-level name after editing ``sys.path`` (Kronos:
    ``sys.path.append("../")`` then ``from model.module import *``) cannot be
    installed as a wheel: ``model`` would collide with any other project's
    ``model``, and the path edit points nowhere once installed.  A wheel of the
    patched tree, and so a compiled or exported program built from it, needs a
    name of its own.

    Each absolute ``import old[.x] [as y]`` and ``from old[.x] import ...``
    whose top-level name is a key of ``renames`` (``{"model": "kronos"}``)
    gets the new name (``import old`` becomes ``import new as old``, so the
    file's uses of ``old`` keep working; ``import old.x`` without ``as`` warns
    that they are not renamed); relative imports, other packages that merely start
    alike (``modelling``) and names imported *from* a module are left alone.
    With ``drop_path_edits`` (the default), statements
    ``sys.path.append(...)`` / ``sys.path.insert(...)`` are removed: the
    installed package needs none.  Imports that already use a new name are
    reported as already fixed.  Nothing else in the file changes, so the
    package behaves as the tree does.
    """

    NAME = "rename-imports"
    DESCRIPTION = "Rename a tree's imports of its own bare top-level package and drop its sys.path edits."
    LOOKS_FOR = "`import old...` / `from old... import` for a top-level name in `renames`"
    OPTIONS: dict[str, Any] = {"renames": {}, "drop_path_edits": True}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        renames = self.options["renames"]
        if not renames or not isinstance(renames, dict) or not all(
                isinstance(k, str) and k.isidentifier() and isinstance(v, str) and v.isidentifier()
                for k, v in renames.items()):
            raise CodemodOptionError("codemod 'rename-imports': renames must map top-level names to new ones "
                                     '({"model": "kronos"})')

    def _renamed(self, node: cst.CSTNode, name: cst.BaseExpression) -> cst.BaseExpression | None:
        """``name`` (a dotted module name) with its head renamed, recording the site; None when not ours."""
        parts = code(name).split(".")
        if parts[0] in self.options["renames"].values():
            self.record_already(node, f"`{code(name)}` already renamed")
            return None
        if parts[0] not in self.options["renames"]:
            return None
        new = _dotted([self.options["renames"][parts[0]], *parts[1:]])
        self.record(node, f"`{code(name)}` -> `{code(new)}`")
        return new

    def leave_Import(self, original_node: cst.Import, updated_node: cst.Import) -> cst.Import:
        names = []
        for alias in updated_node.names:
            old = code(alias.name)
            new = self._renamed(original_node, alias.name)
            if new is None:
                names.append(alias)
            elif alias.asname is None and "." not in old:
                # `import model` binds `model`: `import kronos as model` keeps every `model.x` in the file working
                names.append(alias.with_changes(name=new, asname=cst.AsName(name=cst.Name(old))))
            else:
                if alias.asname is None:
                    self.context.warnings.append(f"`import {old}` binds `{old.split('.')[0]}`; the file's uses "
                                                 "of that name are not renamed")
                names.append(alias.with_changes(name=new))
        return updated_node.with_changes(names=names)

    def leave_ImportFrom(self, original_node: cst.ImportFrom, updated_node: cst.ImportFrom) -> cst.ImportFrom:
        if updated_node.relative or updated_node.module is None:
            return updated_node
        new = self._renamed(original_node, updated_node.module)
        return updated_node if new is None else updated_node.with_changes(module=new)

    def leave_SimpleStatementLine(self, original_node: cst.SimpleStatementLine,
                                  updated_node: cst.SimpleStatementLine):
        if self.options["drop_path_edits"] and m.matches(updated_node, _PATH_EDIT):
            self.record(original_node, f"`{code(updated_node.body[0])}` removed")
            return cst.RemoveFromParent()
        return updated_node
