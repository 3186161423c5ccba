"""pad-single-row: run a compiled step on two rows when it is called with one, so one row is not a graph of its own."""

from __future__ import annotations

from typing import Any

from .base import PAD_SINGLE_ROW_HELPER, RoutingCodemod

HELPER = PAD_SINGLE_ROW_HELPER


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
    outputs)(...)``, a helper imported from patchkit's runtime helpers.  It returns the
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
