"""static-kv-cache: make a slot-indexed KV cache writable and readable with static shapes."""

from __future__ import annotations

from typing import Any

import libcst as cst
import libcst.matchers as m
from libcst.codemod.visitors import AddImportsVisitor
from libcst.helpers import parse_template_expression, parse_template_module, parse_template_statement

from .base import OR, PatchkitCodemod, parenthesize
from .base import code as _code
from .base import IS_COMPILING, IS_COMPILING_CODE as _IS_COMPILING


def _self_attr(name: str) -> m.Attribute:
    return m.Attribute(value=m.Name("self"), attr=m.Name(name))


#: The accessors added to the cache class; ``{sliced_read}`` is replaced by ``_SLICED_READ`` when the class
#: has a layout read as before (option ``sliced_read_when``), else dropped.
_METHODS = '''
def {position}(self, {layer}: int) -> torch.Tensor:
    """Fill position of the layer's slot as a 0-d tensor copy (no host sync; stays valid after append)."""
    {slot_assign}
    return self.{index}[{slot}].clone()

def {read}(self, {layer}: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The slot's whole preallocated K/V buffers (static shapes); the caller masks unfilled positions."""
{sliced_read}
    {slot_assign}
    return self.{keys}[{slot}], self.{values}[{slot}]

def {empty}(self) -> bool:
    """True until the first append after construction or reset(): a host bool, constant within a phase."""
    return self.{flag}
'''
_SLICED_READ = """    if self.{sliced}:
        return self[{layer}]
"""


def _not_compiling_if(node: cst.CSTNode) -> bool:
    return m.matches(
        node,
        m.If(
            test=m.UnaryOperation(operator=m.Not(), expression=IS_COMPILING)
        ),
    )


class StaticKvCache(PatchkitCodemod):
    """Turn a growing, ``.item()``-driven KV cache into a static one.

    Hazards removed (the cache sits inside every attention layer, so each one
    repeats per layer and per decode step):

    * graph break: ``assert end <= self.max_len`` on a tensor ``end`` is a
      data-dependent branch;
    * graph break: ``self.keys[slot, :, start:end] = k`` with tensor bounds;
    * graph break + recompile: readers sliced ``[:end]`` with ``end`` from
      ``.item()``, so K/V grow one step per decode step.

    The class keeps its fields, constructor signature, ``__getitem__``,
    ``current_len``, ``seq_len`` and its eager errors.  The codemod:

    * rewrites the slice writes in ``append`` to
      ``self.keys[slot].index_copy_(dim, start + torch.arange(n), k)`` at the
      0-d tensor position ``start`` (the per-slot fill counter, which stays on
      the device);
    * keeps the overflow ``assert`` for eager runs only
      (``if not torch.compiler.is_compiling():``), so eager raises the very same
      AssertionError while compiled graphs carry no host check;
    * adds ``<position_method>(layer)`` (the slot's fill position as a 0-d
      tensor copy), ``<read_method>(layer)`` (the slot's whole preallocated K/V
      buffers: static shapes, the caller masks positions not filled yet; when
      the bool attribute named by ``sliced_read_when`` is true, for a layout whose
      attention kernel takes no such mask, it returns ``self[layer]`` as before) and
      ``<empty_method>()`` (a host bool, True until the first ``append`` after
      construction or ``reset``; it flips once per decode, so code that picks
      prefill vs decode on it compiles one graph per phase);
    * marks the buffers' sequence dimension with
      ``torch._dynamo.maybe_mark_dynamic`` at construction: its size follows the
      requested horizon, and one graph then serves every horizon (no-op in eager);
      so are the dims named in ``row_dims`` (the rows a cache holds follow the
      caller's batch: marked, one graph serves every batch).

    Options name the class and its members (``class_name`` is required).
    """

    NAME = "static-kv-cache"
    DESCRIPTION = "Static-shape KV cache: index_copy_ writes at a 0-d position, full-buffer reads, eager-only overflow check."
    LOOKS_FOR = (
        "a cache class whose append() writes `self.<keys>[slot, ..., start:end, ...] = k` at "
        "`start = self.<index>[slot]` and asserts `end <= self.<max_len>`"
    )
    OPTIONS: dict[str, Any] = {
        # the upstream's names: no defaults, the patch set names every one
        "class_name": None,
        "keys_attr": None,
        "values_attr": None,
        "index_attr": None,
        "max_len_attr": None,
        "init_method": None,
        "append_method": None,
        "reset_method": None,
        # names this codemod adds (patchkit's vocabulary, shared with kv-cache-callsites and decode-prefix-slice)
        "position_method": "seq_pos",
        "read_method": "read_full",
        "empty_method": "is_empty",
        "flag_attr": "_host_empty",
        "sliced_read_when": None,
        # buffer dims that follow the caller's batch (rows = batch x variates): marked dynamic as well
        "row_dims": (),
    }

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        self.identifier("class_name", "keys_attr", "values_attr", "index_attr", "max_len_attr", "init_method",
                        "append_method", "reset_method", "position_method", "read_method", "empty_method", "flag_attr")
        self.options["row_dims"] = self.dims(self.options["row_dims"], "row_dims", required=False)
        self._depth = 0  # function nesting inside the target class
        self._in_target = False
        self._method = ""
        self._if_stack: list[tuple[cst.BaseExpression, bool]] = []
        # filled by the pre-scan of append()
        self._slot_assign: cst.Assign | None = None
        self._layer_param = "layer_idx"
        self._start_name = ""
        self._seq_dims: list[tuple[str | None, bool, int]] = []
        self._tests: dict[str, cst.BaseExpression] = {}  # source of each if-test in _seq_dims -> its node

    # -- helpers -------------------------------------------------------------
    @property
    def _buffers(self) -> tuple[str, str]:
        return self.options["keys_attr"], self.options["values_attr"]

    def _write_parts(self, stmt: cst.CSTNode) -> tuple[str, cst.BaseExpression, int, cst.BaseExpression, cst.BaseExpression] | None:
        """``self.B[slot, ..., start:end, ...] = value`` -> (B, slot, dim, start, value)."""
        if not m.matches(stmt, m.Assign(targets=[m.AssignTarget(target=m.Subscript())])):
            return None
        target = stmt.targets[0].target  # type: ignore[attr-defined]
        buf = next((b for b in self._buffers if m.matches(target.value, _self_attr(b))), None)
        if buf is None or len(target.slice) < 2 or not isinstance(target.slice[0].slice, cst.Index):
            return None
        slices = [(i, e.slice) for i, e in enumerate(target.slice) if isinstance(e.slice, cst.Slice)]
        bounded = [(i, s) for i, s in slices if s.lower is not None]
        if len(bounded) != 1 or any(s.lower is not None or s.upper is not None for i, s in slices if s is not bounded[0][1]):
            return None
        dim, sl = bounded[0]
        if not m.matches(sl.lower, m.Name(self._start_name)) or sl.upper is None:
            return None
        return buf, target.slice[0].slice.value, dim, sl.lower, stmt.value  # type: ignore[attr-defined]

    def _prescan(self, cls: cst.ClassDef) -> None:
        index = _self_attr(self.options["index_attr"])
        for func in cls.body.body:
            if not (isinstance(func, cst.FunctionDef) and func.name.value == self.options["append_method"]):
                continue
            params = [p.name.value for p in func.params.params]
            if len(params) >= 2:
                self._layer_param = params[1]
            start = m.findall(func, m.Assign(targets=[m.AssignTarget(target=m.Name())], value=m.Subscript(value=index)))
            if start:
                self._start_name = start[0].targets[0].target.value  # type: ignore[attr-defined]
                slot = start[0].value.slice[0].slice.value  # type: ignore[attr-defined]
                if isinstance(slot, cst.Name):
                    found = m.findall(func, m.Assign(targets=[m.AssignTarget(target=m.Name(slot.value))]))
                    if found:
                        self._slot_assign = found[0]  # type: ignore[assignment]
            self._scan_writes(func.body, None, True)

    def _scan_writes(self, block: cst.CSTNode, test: str | None, branch: bool) -> None:
        """Collect (if-test, branch, sequence dim) of every buffer write in append()."""
        for stmt in getattr(block, "body", ()):
            if isinstance(stmt, cst.If):
                key = _code(stmt.test)
                self._tests[key] = stmt.test
                self._scan_writes(stmt.body, key, True)
                if isinstance(stmt.orelse, cst.Else):
                    self._scan_writes(stmt.orelse.body, key, False)
                elif isinstance(stmt.orelse, cst.If):
                    self._scan_writes(cst.IndentedBlock(body=[stmt.orelse]), key, False)
            elif isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
                inner = stmt.body[0]
                parts = self._write_parts(inner)
                if parts is not None:
                    self._seq_dims.append((test, branch, parts[2]))
                elif m.matches(inner, m.Expr(value=m.Call(func=m.Attribute(attr=m.Name("index_copy_"))))):
                    call = inner.value  # type: ignore[attr-defined]
                    if m.matches(call.func.value, m.Subscript(value=m.OneOf(*(_self_attr(b) for b in self._buffers)))) and m.matches(call.args[0].value, m.Integer()):
                        self._seq_dims.append((test, branch, int(call.args[0].value.value) + 1))
            elif isinstance(stmt, cst.BaseCompoundStatement):
                self._scan_writes(stmt.body, test, branch)

    # -- class ----------------------------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        if node.name.value == self.options["class_name"] and not self._in_target:
            self._in_target = True
            self._prescan(node)
        return True

    def leave_ClassDef(self, original_node: cst.ClassDef, updated_node: cst.ClassDef) -> cst.ClassDef:
        if original_node.name.value != self.options["class_name"] or not self._in_target:
            return updated_node
        self._in_target = False
        existing = {f.name.value: f for f in updated_node.body.body if isinstance(f, cst.FunctionDef)}
        wanted = (self.options["position_method"], self.options["read_method"], self.options["empty_method"])
        if all(name in existing for name in wanted):
            self.record_already(original_node, f"static accessors {', '.join(wanted)}() already present")
            return updated_node
        if self._slot_assign is None:
            self.context.warnings.append(
                f"static-kv-cache: no `slot = ...` / `start = self.{self.options['index_attr']}[slot]` in "
                f"{self.options['append_method']}(); class left as is"
            )
            return updated_node
        o = self.options
        k, v = self._buffers
        names = {"position": o["position_method"], "read": o["read_method"], "empty": o["empty_method"],
                 "layer": self._layer_param, "index": o["index_attr"], "keys": k, "values": v,
                 "flag": o["flag_attr"], "slot": self._slot_name()}
        if o["sliced_read_when"]:
            names["sliced"] = o["sliced_read_when"]
        methods = parse_template_module(
            _METHODS.replace("{sliced_read}\n", _SLICED_READ if o["sliced_read_when"] else ""),
            # upstream's own `slot = ...` line, as a node
            slot_assign=self._slot_assign,
            **{key: cst.Name(name) for key, name in names.items()},
        )
        new_defs = list(methods.body)
        new_defs = [d.with_changes(leading_lines=[cst.EmptyLine(indent=False)]) for d in new_defs]
        self.record(original_node, f"added {', '.join(n + '()' for n in wanted)} to {original_node.name.value}")
        return updated_node.with_changes(body=updated_node.body.with_changes(body=[*updated_node.body.body, *new_defs]))

    def _slot_name(self) -> str:
        assert self._slot_assign is not None
        return self._slot_assign.targets[0].target.value  # type: ignore[attr-defined]

    # -- methods --------------------------------------------------------------
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        super().visit_FunctionDef(node)
        if self._in_target:
            if self._depth == 0:
                self._method = node.name.value
            self._depth += 1

    def leave_FunctionDef(self, original_node: cst.FunctionDef, updated_node: cst.FunctionDef) -> cst.FunctionDef:
        updated_node = super().leave_FunctionDef(original_node, updated_node)
        if not self._in_target:
            return updated_node
        self._depth -= 1
        if self._depth:
            return updated_node
        name = original_node.name.value
        flag = self.options["flag_attr"]
        extra: list[cst.BaseStatement] = []

        def set_flag(value: str) -> None:
            extra.append(parse_template_statement("self.{flag} = {value}", flag=cst.Name(flag), value=cst.Name(value)))

        def mark_dynamic(buf: str, dim: cst.BaseExpression) -> None:
            extra.append(parse_template_statement("torch._dynamo.maybe_mark_dynamic(self.{buf}, {dim})",
                                                  buf=cst.Name(buf), dim=dim))

        if name == self.options["init_method"]:
            set_flag("True")
            for buf in self._buffers:
                dim = self._dim_expr()
                if dim is not None:
                    mark_dynamic(buf, dim)
                for row_dim in self.options["row_dims"]:
                    mark_dynamic(buf, cst.Integer(str(row_dim)))
        elif name == self.options["append_method"] and self._start_name:
            set_flag("False")
        elif name == self.options["reset_method"]:
            set_flag("True")
        if not extra:
            return updated_node
        flag_set = m.Assign(targets=[m.AssignTarget(target=_self_attr(flag))])
        if m.findall(original_node, flag_set):
            self.record_already(original_node, f"{name}() already maintains self.{flag}")
            return updated_node
        stmts = extra
        comment = {
            self.options["init_method"]: "# static cache: host phase flag; the sequence capacity follows the horizon, "
            "so let one graph serve every capacity",
            self.options["append_method"]: "# static cache: host phase flag (constant within a decode phase)",
            self.options["reset_method"]: "# static cache: back to the prefill phase",
        }[name]
        stmts[0] = stmts[0].with_changes(leading_lines=[cst.EmptyLine(comment=cst.Comment(comment))])
        self.record(original_node, f"{name}(): maintains host flag self.{flag}" + (
            " and marks the buffers' sequence dim dynamic" if len(extra) > 1 else ""))
        body = updated_node.body.with_changes(body=[*updated_node.body.body, *stmts])
        return updated_node.with_changes(body=body)

    def _dim_expr(self) -> cst.BaseExpression | None:
        """Sequence dim of the full buffers, from the writes in append() (per layout branch)."""
        dims = sorted(set(self._seq_dims), key=lambda t: (t[0] or "", not t[1]))
        if not dims:
            return None
        if len({d for _, _, d in dims}) == 1:
            return cst.Integer(str(dims[0][2]))
        if len(dims) == 2 and dims[0][0] == dims[1][0] and dims[0][0] is not None and dims[0][1] != dims[1][1]:
            when_true = next(d for _, t, d in dims if t)
            when_false = next(d for _, t, d in dims if not t)
            return parse_template_expression(
                "{when_true} if {test} else {when_false}", when_true=cst.Integer(str(when_true)),
                test=parenthesize(self._tests[dims[0][0]], OR), when_false=cst.Integer(str(when_false)),
            )
        return None

    # track the enclosing `if` of each write to learn the per-layout dims
    def visit_If(self, node: cst.If) -> None:
        self._if_stack.append((node.test, True))

    def leave_If(self, original_node: cst.If, updated_node: cst.If) -> cst.BaseStatement:
        self._if_stack.pop()
        if self._in_target and self._method == self.options["append_method"] and _not_compiling_if(original_node):
            body = original_node.body.body if isinstance(original_node.body, cst.IndentedBlock) else []
            if any(m.matches(s, m.SimpleStatementLine(body=[m.Assert()])) for s in body):
                self.record_already(original_node, "overflow assert already eager-only")
        return updated_node

    def visit_Else(self, node: cst.Else) -> None:
        if self._if_stack:
            test, _ = self._if_stack[-1]
            self._if_stack[-1] = (test, False)

    def visit_Call(self, node: cst.Call) -> None:
        if (
            self._in_target
            and self._method == self.options["append_method"]
            and m.matches(node, m.Call(func=m.Attribute(attr=m.Name("index_copy_"))))
            and m.matches(node.func.value, m.Subscript(value=m.OneOf(*(_self_attr(b) for b in self._buffers))))  # type: ignore[attr-defined]
        ):
            self.record_already(node, "write already index_copy_ at a tensor position")

    def _inside_gate(self) -> bool:
        return any(_not_compiling_if(cst.If(test=t, body=cst.IndentedBlock(body=[]))) for t, _ in self._if_stack)

    def leave_SimpleStatementLine(
        self, original_node: cst.SimpleStatementLine, updated_node: cst.SimpleStatementLine
    ) -> cst.BaseStatement:
        if not (self._in_target and self._method == self.options["append_method"] and len(original_node.body) == 1):
            return updated_node
        stmt = original_node.body[0]
        parts = self._write_parts(stmt)
        if parts is not None:
            buf, slot, dim, start, value = parts
            src = _code(stmt)
            new = parse_template_expression(
                "self.{buf}[{slot}].index_copy_({dim}, {start} + torch.arange({value}.shape[{dim}], "
                "device={start}.device), {value}.to(self.{buf}.dtype))",
                buf=cst.Name(buf), slot=slot, dim=cst.Integer(str(dim - 1)), start=parenthesize(start),
                value=parenthesize(value),
            )
            AddImportsVisitor.add_needed_import(self.context, "torch")
            self.record(original_node, f"`{src.strip()}` -> index_copy_ at a 0-d tensor position")
            return updated_node.with_changes(body=[cst.Expr(new)])
        max_len = self.options["max_len_attr"]
        overflow = m.Assert(
            test=m.Comparison(comparisons=[m.ComparisonTarget(operator=m.LessThanEqual(), comparator=_self_attr(max_len))])
        )
        if m.matches(stmt, overflow) and not self._inside_gate():
            self.record(original_node, f"tensor overflow assert against self.{max_len} -> eager-only")
            return cst.If(
                test=cst.parse_expression(f"not {_IS_COMPILING}"),
                body=cst.IndentedBlock(body=[updated_node.with_changes(leading_lines=[])]),
                leading_lines=[
                    *updated_node.leading_lines,
                    cst.EmptyLine(
                        comment=cst.Comment(
                            "# the fill position stays on the device: check it on the host in eager runs only"
                        )
                    ),
                ],
            )
        return updated_node
