"""Patch-set schema: what a model's entry in ``patches/`` declares.

A patch set is the only place that knows a model: where its upstream comes
from, which version is pinned, which files to vendor, which codemods to run on
which files with which options, and how verify builds and drives the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class PipSource:
    """An upstream release on the package index, fetched with ``pip download``."""

    package: str
    #: "sdist" (keeps upstream's test/ folder when the sdist ships it) or "wheel".
    dist: Literal["sdist", "wheel"]
    #: (archive-relative prefix, tree-relative destination) pairs; for sdists the
    #: single top-level ``name-version/`` folder is stripped first.
    include: tuple[tuple[str, str], ...]
    #: Paths (tree-relative prefixes) dropped even though an include matched.
    exclude: tuple[str, ...] = ()
    #: Licence, notice and metadata files (archive-relative; ``*`` matches within one path segment),
    #: vendored to ``.upstream/<file name>`` when present; ``patchkit build`` ships them.
    meta: tuple[str, ...] = ()

    kind = "pip"


@dataclass(frozen=True)
class GitSource:
    """An upstream git repository read with gitpython at a pinned commit."""

    url: str
    include: tuple[tuple[str, str], ...]
    exclude: tuple[str, ...] = ()
    #: As ``PipSource.meta``: repository paths of licence and requirement files, kept when present.
    meta: tuple[str, ...] = ()

    kind = "git"


@dataclass(frozen=True)
class Step:
    """Run one codemod over some vendored files.

    ``expect="match"``: the step must rewrite at least one site, or find that
    upstream already has the fixed shape; otherwise upstream drifted and apply
    fails.  ``expect="optional"``: matching nothing is fine (reported).
    """

    codemod: str
    files: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    expect: Literal["match", "optional"] = "match"
    #: Model knowledge: which hazard at which construct this step removes.
    why: str = ""
    #: codemods whose steps must come earlier in the patch set: this step matches or calls what they
    #: create (apply refuses an order that breaks it)
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpstreamTests:
    """How to run upstream's own test-suite against a vendored tree."""

    #: Tree-relative test paths handed to pytest.
    paths: tuple[str, ...]
    #: pytest node-id substrings deselected, each with the reason.
    deselect: dict[str, str] = field(default_factory=dict)
    #: extra pytest args (for example ``-p no:cacheprovider``).
    args: tuple[str, ...] = ()
    #: the upstream's own extras its tests need (``upgrade-check --isolated`` installs them)
    extras: tuple[str, ...] = ()


#: hazards a patch set can claim; verify fails when the upstream variant shows none of them
HAZARDS = ("graph_breaks", "recompiles", "recompile_limit")


@dataclass(frozen=True)
class TrafficSpec:
    """What ``verify --traffic`` holds a patched model to over a varied stream of calls."""

    #: compiled unit name (the ``name=`` a harness passes to its compile_fn) -> graphs allowed over the
    #: whole profile: at most 2 per phase (a static first graph, then one dynamic graph)
    graph_budget: dict[str, int]
    #: phases each unit serves, e.g. {"backbone": ("prefill", "decode")}; budget <= 2 * len(phases)
    phases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: patched eager vs upstream eager, relative L2 per call (NaN positions must match exactly)
    eager_rtol: float = 1e-6
    #: patched compiled vs patched eager on the deterministic outputs, relative L2 per call
    compiled_rtol: float = 1e-5
    #: the same, per element: ``max |compiled - eager| / mean |eager|`` per call, in every compiled pass
    compiled_elem_tol: float = 1e-5
    #: compiled sampled paths vs eager sampled paths: relative L2 of their 10/50/90% quantiles
    sample_rtol: float = 0.1
    #: why sample_rtol is what it is (stated in the report)
    sample_note: str = ""

    def budget_problems(self) -> list[str]:
        out = []
        for unit, budget in self.graph_budget.items():
            phases = max(1, len(self.phases.get(unit, ())))
            if budget > 2 * phases:
                out.append(f"graph budget {budget} for {unit!r} exceeds 2 per phase ({phases} phase(s))")
        return out


@dataclass(frozen=True)
class Package:
    """How ``patchkit build`` ships the patched tree as a wheel."""

    #: distribution name of the wheel (the upstream's, so it replaces it; or a new one where upstream has none)
    dist: str
    #: one line for the wheel's summary
    summary: str
    #: vendored file under ``.upstream/`` with the upstream's requirements: METADATA or PKG-INFO
    #: (``Requires-Dist``), or requirements.txt
    requirements: str
    #: the upstream distribution ``install --upstream`` puts back (None: upstream publishes none)
    upstream_dist: str | None = None
    #: tree-relative prefixes left out of the wheel (upstream's tests must not become importable packages)
    exclude: tuple[str, ...] = ()
    #: (vendored import package, installed import package): a rename, with the tree's own imports rewritten
    rename: tuple[tuple[str, str], ...] = ()
    #: the module users import, checked by the install test and ``runtime.assert_patched``
    probe: str = ""


@dataclass(frozen=True)
class PatchSet:
    model: str
    title: str
    source: PipSource | GitSource
    #: Default version (pip) or commit (git) to vendor.
    pin: str
    #: Versions/refs known to exist (used for --matrix and for friendlier errors).
    known_versions: tuple[str, ...]
    steps: tuple[Step, ...]
    #: Import path of the verify harness class, "module:Class".
    harness: str
    #: Top-level import packages the vendored tree provides (shadowing check).
    provides: tuple[str, ...]
    upstream_tests: UpstreamTests | None = None
    #: Tolerances used by verify.
    mae_tolerance: float = 1e-3
    #: Recompiles the patched workload may need while warming up (e.g. prefill graph ->
    #: decode graph); verify then reruns the workload with recompiles forbidden.
    warmup_recompiles: int = 0
    notes: str = ""
    #: what the upstream shows on the verify workload (graph_breaks, recompiles, recompile_limit); verify
    #: fails with "workload does not exercise HAZARD" when the upstream variant shows none of them
    hazards: tuple[str, ...] = ()
    #: graph budget and fidelity bounds for ``verify --traffic``
    traffic: TrafficSpec | None = None
    #: how ``patchkit build`` / ``install`` ship the patched tree
    package: Package | None = None
    #: what the verify harness imports beyond the upstream's requirements (``upgrade-check --isolated``)
    isolated_requires: tuple[str, ...] = ()
    #: ``patchkit export``: "module:function" building the users' entry point (e.g. a Chronos2Pipeline) from a
    #: loaded package; None when the model has no ahead-of-time export yet
    aot_runtime: str | None = None
    #: ``runtime.compile_model``: "module:function" taking ``(obj, compile_fn)``, an upstream object (pipeline,
    #: forecaster, predictor or model) and a ``CompileFn``, compiling the patch set's compiled units of ``obj``
    #: with it; the verify harness serves its traffic through the same function
    compile_recipe: str | None = None
    #: class names of the upstream objects ``compile_recipe`` takes (matched along the object's MRO)
    compile_targets: tuple[str, ...] = ()
    #: what ``--weights`` takes: one local checkpoint directory per name, comma-separated
    weights_dirs: tuple[str, ...] = ("MODEL_DIR",)


def resolve(spec: str) -> Any:
    """The object a patch set's ``"module:attribute"`` field names (``harness``, ``aot_runtime``, ``compile_recipe``)."""
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def is_a(obj: Any, class_name: str) -> bool:
    """Whether ``obj``'s class or one of its bases is named ``class_name``.  Recipes tell upstream objects apart by
    name, without importing the upstream: the vendored tree the caller imported is the one that counts."""
    return any(c.__name__ == class_name for c in type(obj).__mro__)
