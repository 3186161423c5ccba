"""``patchkit scan --static``: the torch.compile hazards a matcher can see in a source tree, each once.

The static pass reads every Python file below a folder (an upstream's pristine tree, or any project) with LibCST
and reports the constructs that make Dynamo break a graph, sync with the host or recompile, whatever model they
belong to:

* ``data-dependent-branch``: an ``if``/``while``/``assert`` on a tensor's value (``if torch.isnan(x).any():``);
* ``host-sync``: ``.item()``, ``.tolist()`` and ``nonzero`` inside a function (a graph break each);
* ``shape-branch``: ``if length % size != 0:`` on a length read from a tensor's shape (one graph per side);
* ``module-state-write``: a module method other than the constructor that writes ``self.<attr>`` (a guard on
  the attribute, and a recompile when it changes);
* ``loop-grown-tensor``: ``x = torch.cat([x, ...])`` in a loop (a new shape, and a recompile, per step).

Each finding names the codemod from the registry that removes that kind of hazard where one does, or says
"no codemod".  Code already split for compilation (``... if torch.compiler.is_compiling() else ...``, ``if not
torch.compiler.is_compiling() and ...``) is not reported: that is a patched site.  Test folders and files are
skipped.  The dynamic pass (Dynamo over a model's traffic profile) sees what matchers cannot; ``verify MODEL
--traffic --logs graph_breaks,recompiles`` reports it today.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, PositionProvider

from .codemods import REGISTRY
from .codemods.base import COMPILED_ELSE_EAGER, IS_COMPILING, code
from .errors import BadInput

KINDS = ("data-dependent-branch", "host-sync", "shape-branch", "module-state-write", "loop-grown-tensor")

#: ``torch.isnan(x)`` / ``torch.isinf(x)`` / ``torch.isfinite(x)``: what isnan-guard rewrites under ``.any()``
_NAN_TEST = m.Call(func=m.Attribute(value=m.Name("torch"),
                                    attr=m.Name("isnan") | m.Name("isinf") | m.Name("isfinite")))
#: ``<expr>.any()`` / ``<expr>.all()``
_REDUCE_TO_BOOL = m.Call(func=m.Attribute(attr=m.Name("any") | m.Name("all")), args=[])
_HOST_SYNC = m.Call(func=m.Attribute(attr=m.Name("item") | m.Name("tolist") | m.Name("nonzero"))) | m.Call(
    func=m.Attribute(value=m.Name("torch"), attr=m.Name("nonzero")))
#: ``<x>.shape[...]`` / ``<x>.size(...)``
_SHAPE = m.Subscript(value=m.Attribute(attr=m.Name("shape"))) | m.Call(func=m.Attribute(attr=m.Name("size")))
_CAT = m.Call(func=m.Attribute(value=m.Name("torch"), attr=m.Name("cat") | m.Name("concat") | m.Name("concatenate")))
_CONSTRUCTORS = ("__init__", "__post_init__", "__new__", "__setstate__", "reset_parameters", "_init_weights")


@dataclass(frozen=True)
class Finding:
    """One hazard site: ``path:line`` (the tree's own numbering), its kind, the construct as written, the
    enclosing function, and the codemod that removes this kind of hazard (None: no codemod does)."""

    path: str
    line: int
    kind: str
    construct: str
    function: str
    codemod: str | None
    note: str = ""


@dataclass(frozen=True)
class ScanResult:
    root: str
    files: int
    skipped: int
    findings: tuple[Finding, ...]

    def by_kind(self) -> dict[str, int]:
        return {k: sum(f.kind == k for f in self.findings) for k in KINDS}

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "files": self.files, "skipped": self.skipped, "kinds": self.by_kind(),
                "findings": [asdict(f) for f in self.findings]}


def _one_line(node: cst.CSTNode, limit: int = 100) -> str:
    text = " ".join(code(node).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Scanner(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, path: str) -> None:
        self.path = path
        self.found: list[Finding] = []
        self.functions: list[str] = []
        self.classes: list[bool] = []  # is the enclosing class a torch module?
        self.compiled_split = 0  # inside (A if torch.compiler.is_compiling() else B), or an is_compiling() test
        self.shape_names: list[set[str]] = []  # per function: names assigned from a tensor's shape
        self.methods: list[dict[str, list[str]]] = []  # per class: method -> the self.<method>(...) it calls
        self.writes: list[list[tuple[str, Finding]]] = []  # per class: (method, module-state write)

    # -- where we are -------------------------------------------------------------------------------------------
    def _add(self, node: cst.CSTNode, kind: str, codemod: str | None, construct: cst.CSTNode, note: str = "") -> None:
        if self.compiled_split or not self.functions:
            return
        line = self.get_metadata(PositionProvider, node).start.line
        self.found.append(Finding(self.path, line, kind, _one_line(construct), self.functions[-1], codemod, note))

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.append(any(code(b.value) in ("Module", "nn.Module", "torch.nn.Module") for b in node.bases))
        self.methods.append({})
        self.writes.append([])

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        # module state written by forward or a method forward calls (self.m(...)), transitively
        calls, writes = self.methods.pop(), self.writes.pop()
        reached, todo = set(), ["forward"]
        while todo:
            name = todo.pop()
            if name in reached or name not in calls:
                continue
            reached.add(name)
            todo += calls[name]
        for method, finding in writes:
            if method in reached:
                self.found.append(finding)
        self.classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.functions.append(node.name.value)
        self.shape_names.append(set())
        if self.classes and len(self.functions) == 1:
            self.methods[-1][node.name.value] = []  # the self.<method>(...) calls visit_Call finds in it

    def _in_torch_module(self) -> bool:
        return bool(self.classes and self.classes[-1])

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.functions.pop()
        self.shape_names.pop()

    def visit_IfExp(self, node: cst.IfExp) -> None:
        if m.matches(node, COMPILED_ELSE_EAGER):
            self.compiled_split += 1

    def leave_IfExp(self, original_node: cst.IfExp) -> None:
        if m.matches(original_node, COMPILED_ELSE_EAGER):
            self.compiled_split -= 1

    # -- the hazards ----------------------------------------------------------------------------------------------
    def _branch(self, node: cst.CSTNode, test: cst.BaseExpression, raises: bool, shapes: bool = True) -> bool:
        """Report a data-dependent test; False when the test is already split for compilation (then its body is
        eager-only code and is not scanned)."""
        if m.findall(test, IS_COMPILING):
            return False
        torchy = self._in_torch_module() or bool(m.findall(test, m.Attribute(value=m.Name("torch"))))
        for hit in m.findall(test, _REDUCE_TO_BOOL) if torchy else ():
            nan = m.matches(hit.func.value, _NAN_TEST)  # type: ignore[union-attr]
            self._add(node, "data-dependent-branch", "isnan-guard" if nan and raises else None, test,
                      "a validation branch on a tensor's value" if nan else "a branch on a tensor's value")
        shape = self.shape_names[-1] if self.shape_names else set()
        for mod in m.findall(test, m.BinaryOperation(operator=m.Modulo())) if shapes else ():
            left = mod.left  # type: ignore[union-attr]
            if m.matches(left, _SHAPE) or (isinstance(left, cst.Name) and left.value in shape):
                self._add(node, "shape-branch", "branch-free-pad", test, "padding to a multiple of a size")
        return True

    def visit_If(self, node: cst.If) -> bool:
        body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
        raises = any(m.matches(s, m.SimpleStatementLine(body=[m.Raise()])) for s in body)
        if not self._branch(node, node.test, raises):
            self.compiled_split += 1  # the guarded body is eager-only
            node.body.visit(self)
            self.compiled_split -= 1
            if node.orelse is not None:
                node.orelse.visit(self)
            return False
        return True

    def visit_While(self, node: cst.While) -> None:
        self._branch(node, node.test, False)

    def visit_Assert(self, node: cst.Assert) -> None:
        self._branch(node, node.test, True, shapes=False)  # an assert on a multiple is a check, not a branch

    def visit_Call(self, node: cst.Call) -> None:
        if self.methods and self.functions and m.matches(node.func, m.Attribute(value=m.Name("self"))):
            calls = self.methods[-1].get(self.functions[0])
            if calls is not None:
                calls.append(node.func.attr.value)  # type: ignore[union-attr]
        if m.matches(node, _HOST_SYNC):
            receiver = node.func.value  # type: ignore[union-attr]
            on_self = bool(m.findall(receiver, m.Attribute(value=m.Name("self")))) and bool(self.classes)
            if not (self._in_torch_module() or on_self or m.findall(receiver, m.Attribute(value=m.Name("torch")))):
                return  # a data frame, a dict entry: not a tensor this pass can tell
            name = node.func.attr.value  # type: ignore[union-attr]
            table = name == "item" and m.matches(node.func.value, m.Subscript())  # type: ignore[union-attr]
            self._add(node, "host-sync", "item-scalar" if table else None, node,
                      "a lookup-table read (item-scalar keeps a host copy)" if table else f".{name}() syncs with the host")

    def visit_Assign(self, node: cst.Assign) -> None:
        if self.shape_names and m.findall(node.value, _SHAPE):  # the value itself included
            for t in node.targets:
                if isinstance(t.target, cst.Name):
                    self.shape_names[-1].add(t.target.value)
        if self._in_torch_module() and len(self.functions) == 1 and self.functions[-1] not in _CONSTRUCTORS \
                and not self.compiled_split:
            for t in node.targets:
                if m.matches(t.target, m.Attribute(value=m.Name("self"))):
                    attr = t.target.attr.value  # type: ignore[attr-defined]
                    line = self.get_metadata(PositionProvider, node).start.line
                    self.writes[-1].append((self.functions[-1], Finding(
                        self.path, line, "module-state-write", _one_line(t.target), self.functions[-1],
                        "rope-static-cache" if attr.endswith("_cached") else None,
                        "a module attribute written on the forward path")))

    def visit_For(self, node: cst.For) -> None:
        body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
        for stmt in body:
            if not m.matches(stmt, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name())],
                                                                            value=_CAT)])):
                continue
            assign = stmt.body[0]  # type: ignore[attr-defined]
            name = assign.targets[0].target.value
            first = assign.value.args[0].value if assign.value.args else None
            if isinstance(first, (cst.List, cst.Tuple)) and any(
                    m.matches(el.value, m.Name(name)) for el in first.elements):
                self._add(stmt, "loop-grown-tensor", "mark-growing-dynamic", assign, "grows by one step per iteration")


def _skipped(rel: Path) -> bool:
    return any(part in ("test", "tests", "testing") for part in rel.parts[:-1]) or rel.name.startswith("test_") \
        or rel.name == "conftest.py"


def scan_source(source: str, path: str = "<string>") -> list[Finding]:
    """The findings in one module's source (``path`` names it in the findings)."""
    scanner = _Scanner(path)
    MetadataWrapper(cst.parse_module(source), unsafe_skip_copy=True).visit(scanner)
    return sorted(scanner.found, key=lambda f: (f.line, f.kind, f.construct))


def scan_tree(root: Path, *, progress: Callable[[str], None] = lambda msg: None) -> ScanResult:
    """Every Python file below ``root`` (test folders and files left out), scanned; a file that does not parse is
    ``BadInput`` naming it."""
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"{root}: no such folder; give the source tree to scan (for a vendored model: "
                       "`patchkit vendor MODEL`, then `patchkit scan MODEL --static`)")
    files = sorted(p for p in root.rglob("*.py") if p.is_file())
    kept = [p for p in files if not _skipped(p.relative_to(root))]
    progress(f"scanning {len(kept)} Python files below {root} ({len(files) - len(kept)} test files skipped)")
    found: list[Finding] = []
    for path in kept:
        rel = path.relative_to(root).as_posix()
        try:
            found += scan_source(path.read_text(encoding="utf-8"), rel)
        except (UnicodeDecodeError, cst.ParserSyntaxError) as err:
            raise BadInput(f"{root / rel}: not Python that LibCST parses ({type(err).__name__}); "
                           "scan a source tree, or remove the file from it") from err
    missing = {f.codemod for f in found if f.codemod} - set(REGISTRY)
    assert not missing, f"scan names codemods the registry lacks: {missing}"  # a patchkit bug, caught by tests
    return ScanResult(str(root), len(kept), len(files) - len(kept), tuple(found))


__all__ = ["KINDS", "Finding", "ScanResult", "scan_source", "scan_tree"]
