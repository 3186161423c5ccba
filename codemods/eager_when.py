"""eager-when: run one narrow class of compiled step calls as eager code, so it does not cost a graph of its own."""

from __future__ import annotations

from typing import Any

import libcst as cst

from .base import EAGER_WHEN_HELPER, CodemodOptionError, RoutingCodemod, code

HELPER = EAGER_WHEN_HELPER


class EagerWhen(RoutingCodemod):
    """Run the calls of a compiled step that match a narrow condition as eager code.

    Hazard: Dynamo specialises every size-1 dim, including one derived from
    an input (a patch count of ``T // 64`` when a history is one patch long):
    the reshape view checks in ``F.linear``, elementwise broadcasting and
    einops rearranges all guard on it (``Ne(b*v*(T//64), b)``), so the
    smallest call a service sends compiles a graph of its own beside the
    general one, and a budget of two graphs per phase is gone.  Neither
    ``backed_size_oblivious`` (the view checks still guard) nor unbacked sizes
    (``scaled_dot_product_attention`` raises on data-dependent checks) removes
    it, and padding the input is not exact when the model attends to padding.

    Inside the function named ``function``, each call ``<callee>(...)`` to one
    of ``calls`` becomes ``_patchkit_eager_when(<callee>, lambda: <when>)(...)``,
    a helper imported from patchkit's runtime helpers.  It returns the callee itself unless
    the callee (or ``gate``, source text such as ``"self.model"``) runs under
    ``torch.compile`` and the condition ``when`` (source text, evaluated in the
    caller's scope at the call) holds; then the call runs under
    ``torch.compiler.set_stance("force_eager")``, the public way to run a
    compiled module's eager code.  Eager runs never evaluate ``when``: their
    calls, values and errors are upstream's.  Compiled, the matching calls
    return upstream's eager values (no compiled drift) and cost no compile;
    they are not faster than eager.  Each such call is counted in Dynamo's
    ``counters["patchkit"]["eager_when"]``, which ``verify --traffic`` reports
    beside the graphs.  The condition is model knowledge and
    belongs in the patch set; it should name a class of calls that is cheap
    in eager (one patch through the model), or the trade is a bad one.  Calls
    already routed are reported as already fixed.
    """

    NAME = "eager-when"
    HELPER = HELPER
    DESCRIPTION = "Run the compiled step calls that match a narrow condition as eager code, so they cost no graph."
    LOOKS_FOR = "calls to the named step functions inside the named function"
    OPTIONS: dict[str, Any] = {"function": None, "calls": (), "when": None, "gate": None}

    def __init__(self, context, **options: Any) -> None:
        super().__init__(context, **options)
        when = self.expression("when")
        if when is None:
            raise CodemodOptionError(f"codemod {self.NAME!r}: when must be an expression (`x.shape[-1] == 64`)")
        self.options["when"] = code(when)

    def router_args(self) -> str:
        o = self.options
        return f", lambda: {o['when']}" + (f", compiled={o['gate']}" if o["gate"] else "")

    def describe(self, call_name: str, router: cst.BaseExpression) -> str:
        return f"{call_name}(...) -> eager when `{self.options['when']}`"

    def already_text(self, call_name: str) -> str:
        return f"{call_name}(...) already runs eagerly when `{self.options['when']}`"
