"""``patchkit scan MODEL``: what Dynamo itself reports over a model's traffic profile, each hazard once.

The dynamic pass runs the model's traffic profile (``verify/traffic.py``) through the upstream's own entry point
in a fresh process, with the patch set's compiled units compiled by Dynamo's ``eager`` backend: graph breaks and
recompiles are decided before any backend runs, so no inductor time is spent.  From ``TORCH_LOGS=graph_breaks,
recompiles`` it reports:

* ``host-sync``: a graph break on ``Tensor.item()`` / ``.tolist()`` / ``nonzero``;
* ``data-dependent-branch``: a graph break on a branch over a tensor's value;
* ``graph-break``: any other graph break, with Dynamo's reason;
* ``size-1-specialisation``: a recompile because a size is 1 on one call and more on another (Dynamo's 0/1 rule);
* ``static-shape``: a recompile on a size that the first graph fixed;
* ``shape-branch``: a recompile on a guard with ``%`` (a branch on a length modulo a size);
* ``stride-guard``: a recompile on a stride or storage offset (views one call, fresh tensors the next);
* ``type-guard``: a recompile because an argument is ``None`` on one call and a tensor on another;
* ``int-specialisation``: a recompile on a Python int's value;
* ``module-state``: a recompile on an attribute's value (a module's, or an object's such as a cache flag);
* ``recompile-limit``: a function that hit the recompile limit, after which Dynamo runs it eagerly.

Recompiles are grouped by their guard (numbers aside): one hazard shows in every frame Dynamo resumes, and is
listed once with all its sites.  Each hazard names the calls of the profile that met it, and the codemod that
removes its kind (or "no codemod"); a static finding (``patchkit scan --static``) at one of its sites is
reported as confirmed, and the static finding's codemod is preferred.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .codemods import REGISTRY
from .patchset import PatchSet
from .scan import Finding, scan_tree
from .verify.logs import Event, events
from .verify.traffic_report import run_traffic

KINDS = ("host-sync", "data-dependent-branch", "graph-break", "size-1-specialisation", "static-shape",
         "shape-branch", "stride-guard", "type-guard", "int-specialisation", "module-state", "recompile-limit")

#: the kinds that are graph breaks (the rest are recompiles and limit hits)
BREAKS = ("host-sync", "data-dependent-branch", "graph-break")

#: the codemod that removes each kind where no static finding at the site names a more specific one
CODEMOD_FOR: dict[str, str | None] = {
    "host-sync": None, "data-dependent-branch": None, "graph-break": None,
    "size-1-specialisation": "pad-single-row", "static-shape": "dynamic-step-inputs",
    "shape-branch": "branch-free-pad", "stride-guard": "contiguous-step-inputs", "type-guard": None,
    "int-specialisation": None, "module-state": None, "recompile-limit": None,
}
assert {c for c in CODEMOD_FOR.values() if c} <= set(REGISTRY), "dynamic scan names a codemod the registry lacks"

#: the static kinds (``scan --static``) that a dynamic hazard of each kind confirms at one of its sites; a
#: recompile on module state confirms a write to module state anywhere in the same function
STATIC_KINDS: dict[str, frozenset[str]] = {
    "host-sync": frozenset({"host-sync"}), "data-dependent-branch": frozenset({"data-dependent-branch"}),
    "graph-break": frozenset({"host-sync", "data-dependent-branch"}), "shape-branch": frozenset({"shape-branch"}),
    "static-shape": frozenset({"loop-grown-tensor"}), "module-state": frozenset({"module-state-write"}),
}

_SIZE_ONE = re.compile(r"expected 1, actual|actual 1\b|\b2 <= \S+\.size\(\)|\S+\.size\(\)\[\d+\] == 1\b|== 1$")
_ATTR_GUARD = re.compile(r"^[\w\[\]'()]+\.\w+ == (True|False|None|-?\d+)$")
_INT_GUARD = re.compile(r"^[\w.\[\]'()]+ == -?\d+$")


def classify(e: Event) -> str:
    """The kind of one logged event."""
    d = e.detail
    if e.kind == "limit":
        return "recompile-limit"
    if e.kind == "break":
        if re.search(r"Tensor\.item\(\)|tolist|nonzero", d):
            return "host-sync"
        if "Data-dependent branching" in d or "data-dependent" in d.lower():
            return "data-dependent-branch"
        return "graph-break"
    if ".stride()" in d or ".storage_offset()" in d:
        return "stride-guard"
    if "%" in e.code or ("%" in d and not e.code and d.count("%") == 1 and "//" not in d):
        return "shape-branch"  # a branch on a length modulo a size (not a view's divisibility check)
    if "expected type of" in d or "NoneType" in d:
        return "type-guard"
    if _SIZE_ONE.search(d):
        return "size-1-specialisation"
    if "size mismatch" in d or ".size()" in d:
        return "static-shape"
    if "self._modules[" in d or re.match(r"^(L\[')?self\b", d) or _ATTR_GUARD.match(d):
        return "module-state"
    if _INT_GUARD.match(d):
        return "int-specialisation"
    return "static-shape" if re.search(r"\bs\d+\b|size", d) else "int-specialisation"


def _key(kind: str, e: Event) -> tuple:
    if kind in BREAKS or kind == "recompile-limit":
        return kind, e.file, e.line
    guard = re.sub(r"expected \d+, actual \d+", "expected N, actual N", e.detail)
    guard = re.sub(r"(?<![\w\[])\d+(?![\w\]])", "N", guard)
    if kind in ("size-1-specialisation", "static-shape"):  # the same rule in every frame Dynamo resumes
        guard = re.sub(r"[\w.\[\]']+\.size\(\)", "T.size()", re.sub(r"tensor '[^']*'", "tensor", guard))
    return kind, guard


@dataclass
class Hazard:
    """One hazard: its kind, first site (``path:line`` in the tree's numbering) and function, Dynamo's words
    (reason or guard), every site it showed at, the calls that met it, how often, the codemod for its kind, and
    the static findings it confirms."""

    kind: str
    site: str
    function: str
    detail: str
    code: str = ""
    sites: list[str] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    count: int = 0
    codemod: str | None = None
    confirms: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DynamicScan:
    model: str
    tree: str
    variant: str  # "pristine" or "patched"
    size: str
    calls: int
    seed: int
    torch_version: str
    unit_graphs: dict[str, int]
    graph_budget: dict[str, int]
    hazards: tuple[Hazard, ...]
    #: static findings (``scan --static`` over the same tree) at a site where Dynamo showed a hazard
    confirmed: tuple[Finding, ...]
    static_findings: int

    def by_kind(self) -> dict[str, int]:
        return {k: sum(h.kind == k for h in self.hazards) for k in KINDS}

    @property
    def within_budget(self) -> bool:
        """Every compiled unit within the patch set's graph budget, with no graph break and no recompile-limit hit:
        the recompiles left are the graph classes the patch set budgets for."""
        return (bool(self.unit_graphs) and all(u in self.graph_budget and n <= self.graph_budget[u]
                                               for u, n in self.unit_graphs.items())
                and not any(h.kind in BREAKS or h.kind == "recompile-limit" for h in self.hazards))

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "tree": self.tree, "variant": self.variant, "size": self.size,
                "calls": self.calls, "seed": self.seed, "torch_version": self.torch_version,
                "unit_graphs": self.unit_graphs, "graph_budget": self.graph_budget, "within_budget": self.within_budget, "kinds": self.by_kind(),
                "hazards": [asdict(h) for h in self.hazards], "confirmed": [asdict(f) for f in self.confirmed],
                "static_findings": self.static_findings}


def analyse(log: str, tree: Path, static: list[Finding]) -> tuple[list[Hazard], list[Finding]]:
    """The hazards in a traffic log of ``tree`` (``run_traffic(..., "compiled")``'s), and the static findings
    they confirm."""
    by_site: dict[tuple[str, int], list[Finding]] = {}
    by_function: dict[tuple[str, str], list[Finding]] = {}
    for f in static:
        by_site.setdefault((f.path, f.line), []).append(f)
        by_function.setdefault((f.path, f.function), []).append(f)
    where: dict[str, tuple[str, str]] = {}  # site -> (path, function)
    hazards: dict[tuple, Hazard] = {}
    for e in events(log, tree):
        kind = classify(e)
        h = hazards.get(key := _key(kind, e))
        site = f"{e.file}:{e.line}"
        if h is None:
            detail = re.sub(r"^\d+/\d+: ", "", e.detail)
            h = hazards[key] = Hazard(kind, site, e.function, detail, e.code)
        h.count += 1
        if site not in h.sites:
            h.sites.append(site)
            where[site] = (e.file, e.function)
        if e.call is not None and e.call not in h.calls:
            h.calls.append(e.call)
    confirmed: dict[tuple[str, int], Finding] = {}
    for h in hazards.values():
        kinds = STATIC_KINDS.get(h.kind, frozenset())
        found = []
        for site in h.sites:
            path, line = site.rsplit(":", 1)
            near = by_function.get(where[site], []) if h.kind == "module-state" else by_site.get((path, int(line)), [])
            found += [f for f in near if f.kind in kinds and f not in found]
        h.confirms = [f"{f.path}:{f.line} {f.kind}" for f in found]
        h.codemod = next((f.codemod for f in found if f.codemod), CODEMOD_FOR[h.kind])
        for f in found:
            confirmed[(f.path, f.line)] = f
        h.calls.sort()
    order = {k: i for i, k in enumerate(KINDS)}
    ranked = sorted(hazards.values(), key=lambda h: (order[h.kind], -len(h.calls), h.site))
    return ranked, sorted(confirmed.values(), key=lambda f: (f.path, f.line))


def scan_model(ps: PatchSet, tree: Path, variant: str, *, size: str = "tiny", calls: int = 12, seed: int = 0,
               timeout: int = 7200, progress: Callable[[str], None] = lambda msg: None) -> DynamicScan:
    """Run the traffic profile over ``tree`` with the eager backend and report its hazards."""
    spec = ps.traffic
    progress(f"{ps.model} {variant}: {calls} traffic calls compiled with Dynamo's eager backend")
    run = run_traffic(ps, Path(tree).resolve(), variant, "compiled", size=size, calls=calls, seed=seed,
                      backend="eager", timeout=timeout)
    progress(f"{ps.model} {variant}: the static pass over the same tree")
    static = list(scan_tree(Path(tree)).findings)
    hazards, confirmed = analyse(run.log, Path(tree).resolve(), static)
    return DynamicScan(ps.model, str(tree), variant, size, calls, seed, run.data["torch_version"],
                       dict(run.data.get("unit_graphs", {})), dict(spec.graph_budget) if spec else {},
                       tuple(hazards), tuple(confirmed), len(static))
