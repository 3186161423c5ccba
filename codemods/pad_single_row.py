"""pad-single-row: run a compiled step on two rows when it is called with one, so one row is not a graph of its own."""

from __future__ import annotations

from typing import Any

from .base import PAD_SINGLE_ROW_HELPER, RoutingCodemod

HELPER = PAD_SINGLE_ROW_HELPER

_HELPER_SRC = f'''

def {HELPER}(step, rows, distinct=(), outputs=(), factors=(), compiled=None):
    """patchkit pad-single-row: ``step`` itself unless it (or ``compiled``, the module it calls) runs under
    torch.compile.  Compiled, a call whose keyword tensors ``rows`` and ``distinct`` have one row (and whose int
    arguments ``factors``, which multiply the rows ``step`` hands on, are 1) runs ``step`` on two: the row and a copy
    of it (``distinct`` tensors, ids, get ``+ 1`` on the copy, so it is a group of its own), and keeps the first row
    of the result, or of its attributes ``outputs``.  Dynamo specialises a size-1 dim; two rows share the batch's
    dynamic graph.  Marks that dynamic-step-inputs put on an input carry over to its two-row copy.  A call without
    one of its ``distinct`` tensors runs as is: nothing would keep the copy out of the row's group."""
    if not _patchkit_is_compiled(step if compiled is None else compiled):
        return step

    def call(*args, **kwargs):
        if any(kwargs.get(name) is None for name in distinct):
            return step(*args, **kwargs)
        given = [name for name in (*rows, *distinct) if kwargs.get(name) is not None]
        if not given or any(kwargs[name].shape[0] != 1 for name in given):
            return step(*args, **kwargs)
        if any(kwargs.get(name, 1) != 1 for name in factors):
            return step(*args, **kwargs)
        for name in given:
            one = kwargs[name]
            two = torch.cat([one, one + 1 if name in distinct else one])
            for mark in ("_dynamo_weak_dynamic_indices", "_dynamo_dynamic_indices"):
                if hasattr(one, mark):
                    setattr(two, mark, set(getattr(one, mark)))
            kwargs[name] = two
        out = step(*args, **kwargs)
        if not outputs:
            return out[:1]
        for name in outputs:
            setattr(out, name, getattr(out, name)[:1])
        return out

    return call
'''


class PadSingleRow(RoutingCodemod):
    """Call a compiled step with two rows where it is called with one, and keep the first row of its result.

    Hazard: Dynamo specialises every size-1 dimension, even one marked
    dynamic, so a compiled model that serves one series now and a batch later
    compiles a graph for batch 1 beside the dynamic one, and with a second
    such dimension (a one-patch horizon, one variate) the graphs multiply past
    any budget.  Compiling with ``backed_size_oblivious`` instead fails on the
    view and contiguity checks inside upstream layers.  The rows of a batch are
    independent in the models this is used on (a series sees only its own
    group), so running one row twice and keeping the first gives the same row.

    Inside the function named ``function``, each call ``<callee>(...)`` to one of
    ``calls`` becomes ``_patchkit_pad_single_row(<callee>, rows, distinct,
    outputs)(...)``, a helper appended to the module once.  It returns the
    callee itself when the callee does not run under torch.compile, so eager
    calls are upstream's calls.  Compiled, a call whose keyword tensors named
    in ``rows`` (data) and ``distinct`` (ids, offset by one on the copy so the
    copy is its own group) have one row runs on two rows; the result is cut to
    its first row, or the attributes named in ``outputs`` are.  ``factors``
    names int arguments by which the callee multiplies its rows (samples per
    batch): a call with any of them above 1 has rows enough and runs as is.
    A call that leaves a ``distinct`` tensor out (None) also runs as is, so the
    copy can never share the row's group.
    ``gate`` (source text, ``"self.model"``) names what must be compiled when
    the callee is eager code around a compiled module.  Calls already routed
    are reported as already fixed.
    """

    NAME = "pad-single-row"
    HELPER = HELPER
    HELPER_SRC = _HELPER_SRC
    DESCRIPTION = "Run a compiled step on two rows when called with one, so batch 1 shares the batch's dynamic graph."
    LOOKS_FOR = "calls to the named step functions inside the named function"
    OPTIONS: dict[str, Any] = {"function": None, "calls": (), "rows": (), "distinct": (), "outputs": (),
                               "factors": (), "gate": None}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        self.identifiers("rows")
        for key in ("distinct", "outputs", "factors"):
            self.identifiers(key, required=False)

    def router_args(self) -> str:
        o = self.options
        extra = "".join(f", {key}={o[key]!r}" for key in ("distinct", "outputs", "factors") if o[key])
        extra += f", compiled={o['gate']}" if o["gate"] else ""
        return f", {o['rows']!r}{extra}"

    def already_text(self, call_name: str) -> str:
        return f"{call_name}(...) already pads a single row"
