"""Run a model's patch set over its pristine tree and lay down the patched tree."""

from __future__ import annotations

import difflib
import hashlib
import fnmatch
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import libcst as cst

from .codemods import HELPERS_MODULE, REGISTRY, CodemodOptionError, Site, helpers_source, run_codemod
from .codemods.base import helpers_path
from .errors import BadInput, NotVendored, PatchkitError, UpstreamDrift
from .patchset import PatchSet, Step
from .workspace import Workspace, check_tree_against, read_tree, recover, sha256_bytes, write_tree

StepStatus = Literal["applied", "already-fixed", "drifted", "skipped"]


@dataclass(frozen=True)
class FileOutcome:
    path: str
    matches: tuple[Site, ...]
    already: tuple[Site, ...]
    changed: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepReport:
    codemod: str
    files: tuple[str, ...]
    expect: str
    status: StepStatus
    outcomes: tuple[FileOutcome, ...]
    looks_for: str
    message: str = ""

    @property
    def match_count(self) -> int:
        return sum(len(o.matches) for o in self.outcomes)

    @property
    def already_count(self) -> int:
        return sum(len(o.already) for o in self.outcomes)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The codemod's warnings, each as ``<file>: <warning>``."""
        return tuple(f"{o.path}: {w}" for o in self.outcomes for w in o.warnings)


@dataclass(frozen=True)
class Plan:
    """What apply would produce: the full patched tree in memory plus step reports."""

    model: str
    version: str
    files: dict[str, bytes]
    changed: tuple[str, ...]
    steps: tuple[StepReport, ...]

    @property
    def drifted(self) -> tuple[StepReport, ...]:
        return tuple(s for s in self.steps if s.status == "drifted" and s.expect == "match")


@dataclass(frozen=True)
class ApplyResult:
    model: str
    version: str
    tree: Path
    steps: tuple[StepReport, ...]
    changed_files: tuple[str, ...]
    wrote: bool
    up_to_date: bool
    diff: str = ""
    mismatched: tuple[str, ...] = field(default_factory=tuple)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every step's codemod warnings, in step order."""
        return tuple(w for s in self.steps for w in s.warnings)


def _decode(data: bytes, rel: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"{rel} is not UTF-8 text; codemods only rewrite Python sources") from err


#: plans already made in this process, newest last: (model, version, steps, codemod classes, pristine digest) -> Plan
_PLANS: OrderedDict[tuple, Plan] = OrderedDict()
_PLANS_KEPT = 8


def plan(ps: PatchSet, pristine: dict[str, bytes], version: str) -> Plan:
    """Run every step over in-memory files; never raises for drift (see ``Plan.drifted``).

    Raises ``BadInput`` before touching anything when a step comes before a step it declares ``after``.
    A plan is a pure function of the steps, the codemods and the pristine files, and each command that needs an
    applied tree checks it with a plan (``require_applied``): the last few are kept per process, keyed by all of
    those, so a second check of the same tree costs a hash of its files, not another LibCST pass."""
    check_order(ps)
    digest = hashlib.sha256()
    for rel in sorted(pristine):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(pristine[rel]).digest())
    key = (ps.model, version, repr(ps.steps), tuple(id(REGISTRY.get(s.codemod)) for s in ps.steps), digest.digest())
    if key in _PLANS:
        _PLANS.move_to_end(key)
        kept = _PLANS[key]
        return replace(kept, files=dict(kept.files))
    files = dict(pristine)
    reports = []
    for step in ps.steps:
        reports.append(_run_step(step, files, pristine))
    _add_runtime_helpers(files, pristine)
    changed = tuple(sorted(rel for rel in files if files[rel] != pristine.get(rel)))
    result = Plan(ps.model, version, files, changed, tuple(reports))
    _PLANS[key] = replace(result, files=dict(files))
    while len(_PLANS) > _PLANS_KEPT:
        _PLANS.popitem(last=False)
    return result


def package_of(rel: str) -> str:
    """The dotted package a tree file's module belongs to: ``toto/inference/forecaster.py`` -> ``toto.inference``,
    ``model/__init__.py`` -> ``model``, a top-level ``setup.py`` -> ``""``."""
    parts = rel[: -len(".py")].split("/") if rel.endswith(".py") else rel.split("/")
    return ".".join(parts[:-1])


def _add_runtime_helpers(files: dict[str, bytes], pristine: dict[str, bytes]) -> None:
    """Copy the runtime helpers module into each top-level package whose rewritten files import it."""
    wanted = {helpers_path(rel) for rel, data in files.items()
              if rel.endswith(".py") and data != pristine.get(rel) and HELPERS_MODULE.encode() in data}
    for rel in sorted(wanted):
        if rel in pristine:
            raise UpstreamDrift(f"upstream ships {rel}, the name patchkit's runtime helpers take in a patched tree; "
                                f"rename it in a patch set step or pin another release with `patchkit vendor`")
        files[rel] = helpers_source()


def check_order(ps: PatchSet) -> None:
    """Every codemod a step names in ``after`` must be run by an earlier step of the same patch set."""
    seen: set[str] = set()
    for i, step in enumerate(ps.steps, 1):
        missing = [name for name in step.after if name not in seen]
        if missing:
            where = "comes later" if any(s.codemod in missing for s in ps.steps[i:]) else "is not in the patch set"
            raise BadInput(f"patch set {ps.model!r}: step {i} ({step.codemod}) must run after "
                           f"{', '.join(missing)}, which {where}")
        seen.add(step.codemod)


def upstream_lines(pristine: str, current: str) -> list[int]:
    """For each 1-based line of ``current`` (the file after earlier steps), the line of ``pristine`` it comes from.

    Line 0 of the result is unused.  A line that an earlier step rewrote maps to the upstream line it
    replaced (the block's last one where the rewrite added lines); a line that an earlier step added
    maps to the upstream line just before it.  Sites are reported in upstream's numbering, so a lock
    and a drift message point at the line a reader finds in the upstream release.
    """
    old, new = pristine.splitlines(), current.splitlines()
    out = [0] * (len(new) + 1)
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for j in range(j1, j2):
            if tag == "equal":
                out[j + 1] = i1 + (j - j1) + 1
            elif tag == "replace":
                out[j + 1] = i1 + min(j - j1, i2 - i1 - 1) + 1
            else:  # "insert": added by an earlier step
                out[j + 1] = max(i1, 1)
    return out


def _upstream_sites(sites: tuple[Site, ...], lines: list[int] | None) -> tuple[Site, ...]:
    if lines is None:
        return sites
    return tuple(replace(x, line=lines[x.line]) if 0 < x.line < len(lines) else x for x in sites)


def _run_step(step: Step, files: dict[str, bytes], pristine: dict[str, bytes] | None = None) -> StepReport:
    cls = REGISTRY.get(step.codemod)
    if cls is None:
        raise BadInput(f"patch set names unknown codemod {step.codemod!r}; known: {', '.join(sorted(REGISTRY))}")
    targets = sorted({rel for pattern in step.files for rel in files if fnmatch.fnmatchcase(rel, pattern)})
    missing = [p for p in step.files if not any(fnmatch.fnmatchcase(rel, p) for rel in files)]
    outcomes = []
    for rel in targets:
        source = _decode(files[rel], rel)
        try:
            result = run_codemod(cls, source, filename=rel, options=step.options, package=package_of(rel))
        except CodemodOptionError as err:
            raise BadInput(str(err)) from err
        except cst.ParserSyntaxError as err:
            raise UpstreamDrift(f"{step.codemod}: {rel} does not parse as Python ({err.message})") from err
        if result.changed:
            try:
                cst.parse_module(result.code)
            except cst.ParserSyntaxError as err:  # pragma: no cover - a codemod bug
                raise PatchkitError(f"{step.codemod} produced unparsable code in {rel}: {err.message}") from err
            files[rel] = result.code.encode("utf-8")
        before = pristine.get(rel) if pristine is not None else None
        lines = None
        if before is not None and before.decode("utf-8", "replace") != source:
            lines = upstream_lines(before.decode("utf-8", "replace"), source)
        outcomes.append(FileOutcome(rel, _upstream_sites(tuple(result.matches), lines),
                                    _upstream_sites(tuple(result.already), lines), result.changed,
                                    tuple(result.warnings)))
    n_match = sum(len(o.matches) for o in outcomes)
    n_already = sum(len(o.already) for o in outcomes)
    if n_match:
        status: StepStatus = "applied"
        message = "; ".join(f"{o.path} {s}" for o in outcomes for s in o.matches)
    elif n_already:
        status = "already-fixed"
        message = "; ".join(f"{o.path} {s}" for o in outcomes for s in o.already)
    else:
        status = "drifted" if step.expect == "match" else "skipped"
        where = ", ".join(targets) if targets else f"no file matches {', '.join(missing)}"
        message = f"looked for {cls.LOOKS_FOR} in {where}; found none"
    return StepReport(step.codemod, tuple(step.files), step.expect, status, tuple(outcomes), cls.LOOKS_FOR, message)


def require_applied(ws: Workspace, ps: PatchSet) -> dict:
    """The lock, once the pristine tree matches it and vendor/MODEL is what apply makes (else ``NotVendored``,
    or ``LockMismatch`` naming ``apply --force`` for a hand-edited tree)."""
    if apply(ws, ps, check=True).up_to_date:
        return ws.read_lock(ps.model)
    refuse_hand_edits(ws, ps)
    raise NotVendored(f"vendor/{ps.model} is missing or out of date; run `patchkit apply {ps.model}` first")


def refuse_hand_edits(ws: Workspace, ps: PatchSet) -> None:
    """``LockMismatch`` when vendor/MODEL differs from what the last apply wrote (a hand edit)."""
    lock = ws.read_lock(ps.model) or {}
    dest = ws.patched(ps.model)
    recorded = (lock.get("patched") or {}).get("files")
    if dest.is_dir() and recorded:
        on_disk = read_tree(dest)
        if {rel: sha256_bytes(data) for rel, data in on_disk.items()} != recorded:
            check_tree_against(dest, on_disk, recorded, what=f"patched tree of {ps.model}",
                               lock_path=ws.lock_path(ps.model), fix=_FORCE_FIX.format(model=ps.model))


_FORCE_FIX = "`patchkit apply {model} --force` restores it"


def drift_error(model: str, version: str, drifted: tuple[StepReport, ...]) -> UpstreamDrift:
    first = drifted[0]
    more = f" (+{len(drifted) - 1} more drifted step(s))" if len(drifted) > 1 else ""
    return UpstreamDrift(f"{model} {version}: codemod {first.codemod!r} no longer applies: {first.message}{more}")


def unified_diff(before: dict[str, bytes], after: dict[str, bytes], a: str = "a", b: str = "b") -> str:
    chunks = []
    for rel in sorted(set(before) | set(after)):
        old, new = before.get(rel, b""), after.get(rel, b"")
        if old == new:
            continue
        chunks.extend(
            difflib.unified_diff(
                old.decode("utf-8", "replace").splitlines(keepends=True),
                new.decode("utf-8", "replace").splitlines(keepends=True),
                fromfile=f"{a}/{rel}",
                tofile=f"{b}/{rel}",
            )
        )
    return "".join(chunks)


def apply(ws: Workspace, ps: PatchSet, *, check: bool = False, diff: bool = False, force: bool = False) -> ApplyResult:
    """Patch ``vendor/.pristine/<model>`` into ``vendor/<model>``.

    Idempotent: when the tree on disk already is what the patch set produces,
    nothing is written.  Atomic: the new tree is built in a staging folder and
    swapped in by rename; the lock is rewritten only after the swap.  Raises
    ``UpstreamDrift`` when an expected codemod matches nothing, and
    ``LockMismatch`` when a vendored file was edited by hand (``force``
    overwrites hand edits in the patched tree, never in the pristine one).
    """
    lock, pristine = ws.require_pristine(ps.model)
    result = plan(ps, pristine, lock["version"])
    if result.drifted:
        raise drift_error(ps.model, lock["version"], result.drifted)
    dest = ws.patched(ps.model)
    if not (check or diff):
        recover(dest)
    on_disk = read_tree(dest) if dest.is_dir() else None
    mismatched = tuple(
        sorted(rel for rel in set(result.files) | set(on_disk or {}) if (on_disk or {}).get(rel) != result.files.get(rel))
    )
    record = {
        "steps": [
            {"codemod": s.codemod, "status": s.status, "sites": [f"{o.path}:{x.line}" for o in s.outcomes for x in o.matches]}
            for s in result.steps
        ],
        "files": {rel: sha256_bytes(data) for rel, data in sorted(result.files.items())},
    }
    tree_current = on_disk is not None and not mismatched
    if tree_current and lock.get("patched") != record:
        mismatched = (ws.lock_path(ps.model).name,)  # the tree is right, the lock's record of it is not
    up_to_date = tree_current and lock.get("patched") == record
    common = dict(model=ps.model, version=lock["version"], tree=dest, steps=result.steps, changed_files=result.changed)
    if diff:
        return ApplyResult(**common, wrote=False, up_to_date=up_to_date,
                           diff=unified_diff(pristine, result.files, "upstream", "patched"), mismatched=mismatched)
    if check or up_to_date:
        return ApplyResult(**common, wrote=False, up_to_date=up_to_date, mismatched=mismatched)
    recorded = lock.get("patched", {}).get("files")
    if not tree_current:
        if on_disk is not None and recorded and not force:
            check_tree_against(dest, on_disk, recorded, what=f"patched tree of {ps.model}",
                               lock_path=ws.lock_path(ps.model), fix=_FORCE_FIX.format(model=ps.model))
        with ws.staging(ps.model) as stage:
            staged = stage / "tree"
            write_tree(staged, result.files)
            ws.swap_in(staged, dest)
    lock["patched"] = record
    ws.write_lock(ps.model, lock)
    return ApplyResult(**common, wrote=True, up_to_date=True, mismatched=mismatched)


__all__ = ["ApplyResult", "Plan", "StepReport", "apply", "drift_error", "plan", "read_tree", "unified_diff"]
