"""rope-static-cache: compiled code computes rotary cos/sin without writing the module; eager keeps upstream's cache."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.helpers import parse_template_statement

from .base import IS_COMPILING, IS_COMPILING_CODE, CodemodOptionError, PatchkitCodemod


def _self_attr(name: str) -> m.Attribute:
    return m.Attribute(value=m.Name("self"), attr=m.Name(name))


def _statements(block: cst.BaseSuite) -> list[cst.BaseStatement]:
    if isinstance(block, cst.IndentedBlock):
        return list(block.body)
    return [cst.SimpleStatementLine(body=list(block.body))]  # type: ignore[attr-defined]


def _single_assign(stmt: cst.CSTNode) -> cst.Assign | None:
    """``stmt`` when it is a line holding exactly one single-target assignment."""
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        assign = stmt.body[0]
        if isinstance(assign, cst.Assign) and len(assign.targets) == 1:
            return assign
    return None


def _assigned_self_attr(stmt: cst.CSTNode) -> str | None:
    """The attribute name in ``self.<name> = ...``, else None."""
    assign = _single_assign(stmt)
    if assign is not None and m.matches(assign.targets[0].target, _self_attr(m.DoNotCare())):  # type: ignore[arg-type]
        return assign.targets[0].target.attr.value  # type: ignore[attr-defined]
    return None


class _SelfAttrUses(cst.CSTVisitor):
    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.found: set[str] = set()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        if m.matches(node.value, m.Name("self")) and node.attr.value in self.names:
            self.found.add(node.attr.value)


def _uses(node: cst.CSTNode, names: set[str]) -> set[str]:
    visitor = _SelfAttrUses(names)
    node.visit(visitor)
    return visitor.found


class _LocalNames(cst.CSTVisitor):
    """Plain names used in a function (attribute names after a dot excluded)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: cst.Name) -> None:
        self.names.add(node.value)

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)
        return False


class _AttrToLocal(cst.CSTTransformer):
    """``self.<attr>`` -> ``<local>`` for the cache attributes."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def leave_Attribute(self, original_node: cst.Attribute, updated_node: cst.Attribute) -> cst.BaseExpression:
        if m.matches(updated_node.value, m.Name("self")) and updated_node.attr.value in self.mapping:
            return cst.Name(self.mapping[updated_node.attr.value])
        return updated_node


class RopeStaticCache(PatchkitCodemod):
    """Keep a rotary embedding's lazily grown cos/sin cache out of compiled code.

    Hazard: the cache method writes module attributes during forward
    (``self.seq_len_cached = seq_len``, ``self.cos_cached = ...``).  Dynamo
    treats an int attribute of an ``nn.Module`` as a constant and guards on it,
    so every new sequence length recompiles; an autoregressive loop whose input
    grows one token per step exhausts ``recompile_limit`` and the function
    silently falls back to eager.  Under CUDA graphs (``reduce-overhead``) the
    cached tensors are graph outputs stored on the module, read back by the
    next run after their memory was reused: "accessing tensor output of
    CUDAGraphs that has been overwritten by a subsequent run".

    The rewrite, in the class named by ``class_name``:

    * the body of the cache method's ``if`` becomes a new pure method
      ``compute_method`` (same arguments, attribute writes turned into locals,
      returns the pair);
    * the cache method starts with ``if torch.compiler.is_compiling(): return
      self.<compute_method>(x, seq_len)``: compiled code computes the table of
      the current length from the current ``inv_freq`` on every call (a few
      hundred multiply-adds per layer, fused into the graph) and writes nothing;
    * eager runs upstream's cache method unchanged.

    So eager is upstream bit for bit, for every dtype, device, ``.half()`` /
    ``.to(bfloat16)`` conversion and meta-device initialisation.  Compiled code
    gives what upstream computes on a cache miss: the same operations in the
    module's dtype.  The one difference: upstream can serve a table cached
    before the module was converted to another dtype or device, compiled code
    never does.  Matches a cache method whose body is
    ``if <len> != self.<length_attr>: ...`` (either operand order) followed by
    ``return self.<cos>, self.<sin>``; any read of the cache attributes
    elsewhere in the class (outside ``__init__``'s initialisers) refuses the
    site, because compiled code no longer keeps them current.
    """

    NAME = "rope-static-cache"
    DESCRIPTION = ("Compiled code computes rotary cos/sin per call and writes no module state; eager keeps "
                   "upstream's cache.")
    LOOKS_FOR = (
        "a rotary class whose cache method does `if seq_len != self.<length_attr>:` "
        "... `self.<cos> = ...` ... and returns `self.<cos>, self.<sin>`"
    )
    # The upstream's names (class, cache method, attributes) have no defaults: the
    # patch set names them.  compute_method is the name this codemod adds.
    OPTIONS: dict[str, Any] = {
        "class_name": None,
        "cache_method": None,
        "compute_method": "_compute_cos_sin",
        "length_attr": None,
        "cache_attrs": None,
    }

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        o = self.options
        o["cache_attrs"] = tuple(o["cache_attrs"] or ())
        if len(o["cache_attrs"]) != 2 or not all(isinstance(a, str) and a.isidentifier() for a in o["cache_attrs"]):
            raise CodemodOptionError("codemod 'rope-static-cache': cache_attrs must be two attribute names")
        self.identifier("class_name", "cache_method", "compute_method", "length_attr")

    # -- matching ------------------------------------------------------------
    def _match_cache_method(self, fn: cst.FunctionDef) -> tuple[cst.If, str, str] | None:
        """(the `if`, the x parameter, the length parameter) when ``fn`` has the lazy-cache shape."""
        o = self.options
        params = fn.params.params
        if fn.params.star_arg is not cst.MaybeSentinel.DEFAULT and fn.params.star_arg is not None:
            return None
        if len(params) != 3 or params[0].name.value != "self":
            return None
        x_name, len_name = params[1].name.value, params[2].name.value
        body = _statements(fn.body)
        if len(body) != 2 or not isinstance(body[0], cst.If) or body[0].orelse is not None:
            return None
        test = body[0].test
        length = m.Name(len_name)
        cached = _self_attr(o["length_attr"])
        ne = m.Comparison(left=length, comparisons=[m.ComparisonTarget(operator=m.NotEqual(), comparator=cached)])
        ne_rev = m.Comparison(left=cached, comparisons=[m.ComparisonTarget(operator=m.NotEqual(), comparator=length)])
        if not m.matches(test, m.OneOf(ne, ne_rev)):
            return None
        cos, sin = o["cache_attrs"]
        ret = body[1]
        want = m.SimpleStatementLine(
            body=[m.Return(value=m.Tuple(elements=[m.Element(_self_attr(cos)), m.Element(_self_attr(sin))]))]
        )
        if not m.matches(ret, want):
            return None
        written = {_assigned_self_attr(s) for s in _statements(body[0].body)}
        if not {cos, sin} <= written:
            return None
        return body[0], x_name, len_name

    def _is_fixed_cache_method(self, fn: cst.FunctionDef) -> bool:
        """Does ``fn`` start with ``if torch.compiler.is_compiling(): return self.<compute_method>(...)``?"""
        body = _statements(fn.body)
        compute = m.Call(func=_self_attr(self.options["compute_method"]))
        return bool(body) and m.matches(body[0], m.If(
            test=IS_COMPILING, orelse=None,
            body=m.IndentedBlock(body=[m.SimpleStatementLine(body=[m.Return(value=compute)])])))

    # -- rewriting -------------------------------------------------------------
    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef) -> cst.ClassDef:
        o = self.options
        if original_node.name.value != o["class_name"] or not isinstance(updated_node.body, cst.IndentedBlock):
            return updated_node
        members = list(updated_node.body.body)
        fns = {s.name.value: i for i, s in enumerate(members) if isinstance(s, cst.FunctionDef)}
        if o["cache_method"] not in fns or "__init__" not in fns:
            return updated_node
        cache_fn: cst.FunctionDef = members[fns[o["cache_method"]]]  # type: ignore[assignment]
        init_fn: cst.FunctionDef = members[fns["__init__"]]  # type: ignore[assignment]

        if self._is_fixed_cache_method(cache_fn) and o["compute_method"] in fns:
            self.record_already(original_node, f"{o['class_name']}.{o['cache_method']} already computes the table per call when compiling")
            return updated_node
        found = self._match_cache_method(cache_fn)
        if found is None:
            return updated_node
        if_node, x_name, len_name = found

        cos, sin = o["cache_attrs"]
        state = {o["length_attr"], cos, sin}
        # Every other use of the cache state must be the __init__ initialisers: a reader
        # elsewhere would see a cache compiled code no longer keeps current.
        for i, member in enumerate(members):
            if i == fns[o["cache_method"]]:
                continue
            if i == fns["__init__"]:
                rest = [s for s in _statements(init_fn.body) if _assigned_self_attr(s) not in state]
                if any(_uses(s, state) for s in rest):
                    return updated_node
                continue
            if _uses(member, state):
                return updated_node
        if o["compute_method"] in fns:
            return updated_node  # name clash: refuse rather than shadow something

        compute_fn = self._compute_method(cache_fn, if_node)
        new_cache_fn = self._split_cache_method(cache_fn, x_name, len_name)
        new_members: list[cst.BaseStatement] = []
        for i, member in enumerate(members):
            if i == fns[o["cache_method"]]:
                new_members.append(compute_fn)
                new_members.append(new_cache_fn)
            else:
                new_members.append(member)
        self.require_import("torch")
        self.record(
            original_node.body.body[fns[o["cache_method"]]],
            f"{o['class_name']}.{o['cache_method']}: writes self.{o['length_attr']}/self.{cos}/self.{sin} "
            f"in forward -> computed per call when compiling, upstream's cache in eager",
        )
        return updated_node.with_changes(body=updated_node.body.with_changes(body=new_members))

    def _compute_method(self, cache_fn: cst.FunctionDef, if_node: cst.If) -> cst.FunctionDef:
        o = self.options
        cos, sin = o["cache_attrs"]
        taken = _LocalNames()
        cache_fn.visit(taken)
        mapping = {}
        for attr in (cos, sin):
            local = attr
            while local in taken.names:
                local = "_" + local
            mapping[attr] = local
        body: list[cst.BaseStatement] = []
        for stmt in _statements(if_node.body):
            if _assigned_self_attr(stmt) == o["length_attr"]:
                continue
            body.append(stmt.visit(_AttrToLocal(mapping)))  # type: ignore[arg-type]
        body.append(parse_template_statement("return {cos}, {sin}", cos=cst.Name(mapping[cos]), sin=cst.Name(mapping[sin])))
        # Keep the original signature and decorators; the first statement keeps
        # its comments but no blank line.
        if body and hasattr(body[0], "leading_lines"):
            kept = [line for line in body[0].leading_lines if line.comment is not None]  # type: ignore[union-attr]
            body[0] = body[0].with_changes(leading_lines=kept)  # type: ignore[union-attr]
        return cache_fn.with_changes(
            name=cst.Name(o["compute_method"]),
            body=cst.IndentedBlock(body=body),
        )

    def _split_cache_method(self, cache_fn: cst.FunctionDef, x_name: str, len_name: str) -> cst.FunctionDef:
        """Upstream's cache method behind a compiled-only early return."""
        split = parse_template_statement(
            f"if {IS_COMPILING_CODE}:\n    return self.{{compute}}({{x}}, {{length}})\n",
            compute=cst.Name(self.options["compute_method"]), x=cst.Name(x_name), length=cst.Name(len_name),
        )
        comment = cst.EmptyLine(comment=cst.Comment(
            "# rope-static-cache: compiled code computes the table per call and writes no module state"))
        split = split.with_changes(leading_lines=[comment])
        body = cache_fn.body
        assert isinstance(body, cst.IndentedBlock)  # _match_cache_method saw two statements
        return cache_fn.with_changes(
            body=body.with_changes(body=[split, *body.body]),
            leading_lines=[cst.EmptyLine(indent=False)],
        )
