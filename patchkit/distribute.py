"""Ship a patched tree: a reproducible wheel with provenance, install it, report what is installed.

``build`` stages the patched tree's import packages (upstream tests left out,
Kronos's ``model`` renamed to ``kronos`` with its own imports rewritten), the
upstream's licence and notice files, a provenance record, and a generated
``pyproject.toml``; then ``pip wheel`` (setuptools>=77: the installed one, else an
isolated build) makes the
wheel with ``SOURCE_DATE_EPOCH`` fixed, so the same inputs give the same bytes.

Versions carry the patch-set hash as a PEP 440 local label
(``2.3.2+patchkit.1a2b3c4d5e6f``), so ``pip show`` tells a patched install from
the upstream release.  Nothing here imports upstream code.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import tomli_w

from .errors import BadInput, EnvironmentProblem, MissingTool, NotVendored, PatchkitError
from .patchset import Package, PatchSet
from .provenance import Provenance, patch_hash
from .verdicts import current_verdicts
from .workspace import Workspace, read_tree

#: the provenance record's file name inside the wheel's first import package
PROVENANCE = "_patchkit_provenance.json"
PROVENANCE_FORMAT = 1
#: 1980-01-01: the earliest time a zip entry can carry; fixed so two builds give identical bytes
SOURCE_DATE_EPOCH = "315532800"
_META_DIR = ".upstream/"
_REQUIREMENT_FILES = ("METADATA", "PKG-INFO", "requirements.txt")


class VerifyFailedRefusal(BadInput):
    """install refused: the patch set is not applied, or verify failed for it (use --force)."""


# -- identity -------------------------------------------------------------------------------------
def wheel_version(lock: dict[str, Any]) -> str:
    """Upstream version + ``+patchkit.<hash>``; a git pin (no release) becomes ``0+patchkit.<hash>.g<commit>``."""
    version, label = lock["version"], f"patchkit.{patch_hash(lock)}"
    if lock["source"].get("kind") == "git":
        return f"0+{label}.g{version[:12]}"
    return f"{version}+{label}"


# -- requirements ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Relaxed:
    requirement: str
    now: str
    why: str


_EXTRA = re.compile(r"""^\s*extra\s*==\s*["']([^"']+)["']\s*$""")
_EXTRA_AND = re.compile(r"""\s+and\s+extra\s*==\s*["']([^"']+)["']\s*$""")


def upstream_requirements(tree: dict[str, bytes], pkg: Package) -> tuple[list[str], str | None]:
    """(Requires-Dist lines, Requires-Python) from the vendored metadata file named by the patch set."""
    data = tree.get(_META_DIR + pkg.requirements)
    if data is None:
        raise NotVendored(f"the vendored tree has no {_META_DIR}{pkg.requirements}; re-run `patchkit vendor` "
                          "(older locks did not keep the upstream's metadata)")
    text = data.decode("utf-8", "replace")
    if pkg.requirements == "requirements.txt":
        reqs = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        return [r for r in reqs if r and not r.startswith("-")], None
    headers = text.split("\n\n", 1)[0]
    reqs = [line.split(":", 1)[1].strip() for line in headers.splitlines() if line.startswith("Requires-Dist:")]
    py = [line.split(":", 1)[1].strip() for line in headers.splitlines() if line.startswith("Requires-Python:")]
    return reqs, (py[0] if py else None)


def relax(requirements: list[str]) -> tuple[list[str], dict[str, list[str]], list[Relaxed]]:
    """Split into (dependencies, {extra: deps}, changes).

    A requirement whose version specifier excludes the version installed here
    (toto-ts pins ``torch==2.7.0``; this environment verified with another), and
    every exact ``==`` pin, is relaxed to ``>=`` the lower of its own lowest bound
    and the installed version, so it admits both what upstream pinned and what
    verify ran with.  (Exact pins all go: toto-ts pins its whole environment of
    the torch 2.7 days, for example ``lightning==2.3.3``, which imports
    ``pkg_resources`` and so fails next to the setuptools newer torch requires.)
    Every change is returned and goes into the provenance record.  Duplicates
    collapse.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    deps: list[str] = []
    extras: dict[str, list[str]] = {}
    changes: list[Relaxed] = []
    for line in requirements:
        extra = None
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            raise BadInput(f"upstream requirement {line!r} is not valid: {err}") from err
        marker = str(req.marker) if req.marker else ""
        if (m := _EXTRA.match(marker)) or (m := _EXTRA_AND.search(marker)):
            extra = m.group(1)
            marker = _EXTRA.sub("", marker) if _EXTRA.match(marker) else _EXTRA_AND.sub("", marker)
        try:
            installed = Version(importlib.metadata.version(req.name))
        except (importlib.metadata.PackageNotFoundError, InvalidVersion):
            installed = None
        spec = str(req.specifier)
        excludes = installed is not None and req.specifier and not req.specifier.contains(installed, prereleases=True)
        pinned = any(s.operator in ("==", "===") and "*" not in s.version for s in req.specifier)
        if excludes or pinned:
            bounds = [Version(s.version) for s in req.specifier if s.operator in ("==", "===", ">=", "~=", ">")
                      and "*" not in s.version]
            low = min([*bounds, *([installed] if installed is not None else [])])
            new_spec = f">={low}"
            now = _format(req, new_spec, marker) + (f" (extra {extra!r})" if extra else "")
            why = (f"{req.name} {installed} is installed here (verify ran with it); {spec} excludes it" if excludes
                   else f"exact pin {spec}: an upstream that pins its whole environment (toto-ts: torch==2.7.0 and "
                        "the versions of its day) leaves pip nothing to resolve next to another torch")
            if all(c.requirement != line for c in changes):
                changes.append(Relaxed(line, now, why))
            spec = new_spec
        text = _format(req, spec, marker)
        bucket = extras.setdefault(extra, []) if extra else deps
        if text not in bucket:
            bucket.append(text)
    return deps, extras, changes


def _format(req, spec: str, marker: str) -> str:
    name = req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "")
    return f"{name}{spec}" + (f"; {marker}" if marker else "")


# -- build ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildResult:
    model: str
    dist: str
    version: str
    wheel: Path
    sha256: str
    provenance: dict[str, Any]
    relaxed: tuple[Relaxed, ...] = ()
    reused: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["wheel"] = str(self.wheel)
        return d


def _shipped_files(ps: PatchSet, tree: dict[str, bytes]) -> dict[str, bytes]:
    """tree-relative path -> bytes of what goes into the wheel, renamed, imports rewritten."""
    pkg = ps.package
    assert pkg is not None
    renames = dict(pkg.rename)
    if renames:  # LibCST only where a tree is renamed: the runtime reads provenance through this module
        from .codemods import REGISTRY, run_codemod
    out: dict[str, bytes] = {}
    for rel, data in tree.items():
        if rel.startswith(_META_DIR) or any(rel.startswith(x) for x in pkg.exclude):
            continue
        top, _, rest = rel.partition("/")
        if top not in ps.provides or not rest:
            continue
        new_rel = f"{renames.get(top, top)}/{rest}"
        if renames and rel.endswith(".py"):
            data = run_codemod(REGISTRY["rename-imports"], data.decode("utf-8"), filename=rel,
                               options={"renames": renames}).code.encode("utf-8")
        out[new_rel] = data
    return out


def import_names(ps: PatchSet) -> tuple[str, ...]:
    renames = dict(ps.package.rename) if ps.package else {}
    return tuple(renames.get(p, p) for p in ps.provides)


def _pyproject(ps: PatchSet, version: str, deps: list[str], extras: dict[str, list[str]], python: str | None,
               files: dict[str, bytes], licences: list[str]) -> str:
    pkg = ps.package
    assert pkg is not None
    dirs = sorted({str(PurePosixPath(rel).parent) for rel in files})
    packages = [d.replace("/", ".") for d in dirs]
    data = {d.replace("/", "."): sorted(PurePosixPath(r).name for r in files
                                        if str(PurePosixPath(r).parent) == d and not r.endswith(".py"))
            for d in dirs}

    project: dict[str, Any] = {
        "name": pkg.dist, "version": version,
        "description": pkg.summary + " (patched by patchkit for torch.compile)",
        "dependencies": deps, "license-files": licences,
    }
    if python:
        project["requires-python"] = python
    if extras:
        project["optional-dependencies"] = dict(sorted(extras.items()))
    doc = {
        "build-system": {"requires": ["setuptools>=77"], "build-backend": "setuptools.build_meta"},
        "project": project,
        "tool": {"setuptools": {"packages": packages, "include-package-data": False,
                                "package-data": {name: names for name, names in data.items() if names}}},
    }
    return tomli_w.dumps(doc)


def _setuptools_ok() -> bool:
    """Whether this environment's setuptools can build the generated project (PEP 639 needs 77+)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(importlib.metadata.version("setuptools")) >= Version("77")
    except (importlib.metadata.PackageNotFoundError, InvalidVersion):
        return False


def build(ws: Workspace, ps: PatchSet, out_dir: Path, *, progress=lambda msg: None) -> BuildResult:
    """Build the wheel of ``vendor/<model>`` into ``out_dir`` (atomic: a finished wheel or nothing)."""
    from .apply import require_applied

    if ps.package is None:
        raise BadInput(f"{ps.model}: its patch set declares no package; it cannot be built")
    lock = require_applied(ws, ps)
    tree = read_tree(ws.patched(ps.model))
    pkg = ps.package
    version = wheel_version(lock)
    reqs, python = upstream_requirements(tree, pkg)
    deps, extras, changes = relax(reqs)
    licences = sorted(rel[len(_META_DIR):] for rel in tree if rel.startswith(_META_DIR)
                      and rel[len(_META_DIR):] not in _REQUIREMENT_FILES)
    if not licences:
        raise NotVendored(f"the vendored {ps.model} has no licence file under {_META_DIR}; re-run `patchkit vendor "
                          f"{ps.model}`")
    files = _shipped_files(ps, tree)
    import torch

    phash = patch_hash(lock)
    provenance = {
        "format": PROVENANCE_FORMAT,
        "model": ps.model,
        "distribution": pkg.dist,
        "version": version,
        "upstream": {"version": lock["version"], **lock["source"]},
        "patch_hash": phash,
        "steps": lock["patched"].get("steps", []),
        "renamed": dict(pkg.rename),
        "requirements_relaxed": [asdict(c) for c in changes],
        "torch": torch.__version__,
        "verify": current_verdicts(ws, ps.model, phash) or None,
    }
    first = import_names(ps)[0]
    files[f"{first}/{PROVENANCE}"] = (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="patchkit-build-") as tmp:
        stage = Path(tmp) / "src"
        for rel, data in sorted(files.items()):
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for name in licences:
            (stage / name).write_bytes(tree[_META_DIR + name])
        (stage / "pyproject.toml").write_text(_pyproject(ps, version, deps, extras, python, files, licences))
        for path in stage.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        wheels = Path(tmp) / "wheels"
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PYTHONHASHSEED": "0"}
        # the installed setuptools when new enough (offline, fast); else an isolated build fetches one
        isolation = ["--no-build-isolation"] if _setuptools_ok() else []
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--no-cache-dir",
               "--disable-pip-version-check", "-q", "-w", str(wheels), str(stage)]
        progress(f"pip wheel {pkg.dist} {version}")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
        except FileNotFoundError as err:  # pragma: no cover
            raise MissingTool(f"cannot run pip ({err})") from err
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
            how = "installed setuptools" if isolation else "setuptools>=77 from the package index (isolated build)"
            raise EnvironmentProblem(f"pip wheel failed for {pkg.dist} {version} with {how}: {last[0]}")
        built = sorted(wheels.glob("*.whl"))
        if len(built) != 1:
            raise PatchkitError(f"pip wheel produced {len(built)} wheels for {pkg.dist}")
        final = out_dir / built[0].name
        reused = final.exists() and final.read_bytes() == built[0].read_bytes()
        if not reused:
            tmp_final = out_dir / f".{built[0].name}.part"
            shutil.copyfile(built[0], tmp_final)
            os.replace(tmp_final, final)
    digest = hashlib.sha256(final.read_bytes()).hexdigest()
    return BuildResult(ps.model, pkg.dist, version, final, digest, provenance, tuple(changes), reused)


# -- status ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelStatus:
    model: str
    distribution: str
    #: "not installed", "upstream", "patched (current)", "patched (stale)",
    #: "patched (unknown: not vendored and applied here)"
    state: str
    version: str | None = None
    location: str | None = None
    patch_hash: str | None = None
    current_hash: str | None = None
    verify: dict[str, Any] | None = field(default=None)
    detail: str = ""

    @property
    def patched(self) -> bool:
        return self.state.startswith("patched")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def installed_provenance(ps: PatchSet) -> tuple[dict[str, Any] | None, Path | None]:
    """(provenance record, package directory) of the importable package, without importing it."""
    name = import_names(ps)[0]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None, None
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    record = pkg_dir / PROVENANCE
    if not record.is_file():
        return None, pkg_dir
    try:
        return json.loads(record.read_text()), pkg_dir
    except json.JSONDecodeError:
        return None, pkg_dir


def status(ws: Workspace, ps: PatchSet) -> ModelStatus:
    pkg = ps.package
    dist = pkg.dist if pkg else ps.model
    record, pkg_dir = installed_provenance(ps)
    current = None
    lock = ws.read_lock(ps.model)
    if lock and "patched" in lock:
        current = patch_hash(lock)
    names = [dist] + ([pkg.upstream_dist] if pkg and pkg.upstream_dist and pkg.upstream_dist != dist else [])
    version = None
    for name in names:
        try:
            version = importlib.metadata.version(name)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    location = str(pkg_dir) if pkg_dir else None
    if pkg_dir is None:
        return ModelStatus(ps.model, dist, "not installed", version, None, None, current)
    if record is None:
        return ModelStatus(ps.model, dist, "upstream", version, location, None, current,
                           detail="no patchkit provenance in the importable package")
    phash = Provenance.of(record).patch_hash
    verify = (current_verdicts(ws, ps.model, phash) or record.get("verify")) if phash else None
    if current is None:
        state, detail = "patched (unknown: not vendored and applied here)", "cannot compare with a current patch set"
    elif phash == current:
        state, detail = "patched (current)", ""
    else:
        state, detail = "patched (stale)", f"built from patch set {phash}; the current one is {current}"
    return ModelStatus(ps.model, dist, state, record.get("version", version), location, phash, current, verify,
                       detail)


# -- install --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstallResult:
    model: str
    action: str  # "installed", "restored upstream", "removed"
    target: str
    forced: bool = False
    build: BuildResult | None = None


def _pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        text = proc.stderr.strip() or proc.stdout.strip()
        last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["no output"]
        raise EnvironmentProblem(f"{what} failed: {last[0].strip()}")


def install(ws: Workspace, ps: PatchSet, *, out_dir: Path, upstream: bool = False, force: bool = False,
            deps: bool = True, progress=lambda msg: None) -> InstallResult:
    """Install the patched wheel (building it when needed) or, with ``upstream``, the pinned upstream back."""
    pkg = ps.package
    if pkg is None:
        raise BadInput(f"{ps.model}: its patch set declares no package")
    if upstream:
        _pip(["uninstall", "-y", pkg.dist], f"pip uninstall {pkg.dist}")
        if pkg.upstream_dist is None:
            return InstallResult(ps.model, "removed", f"{pkg.dist} (there is no upstream distribution to restore)")
        lock = ws.read_lock(ps.model)
        version = lock["version"] if lock else ps.pin
        _pip(["install", "--no-deps", f"{pkg.upstream_dist}=={version}"], f"pip install {pkg.upstream_dist}=={version}")
        return InstallResult(ps.model, "restored upstream", f"{pkg.upstream_dist}=={version}")
    from .apply import apply as _apply, refuse_hand_edits

    applied = _apply(ws, ps, check=True).up_to_date if ws.read_lock(ps.model) else False
    if not applied and not force:
        refuse_hand_edits(ws, ps)
        raise VerifyFailedRefusal(f"{ps.model}: the patch set is not applied (run `patchkit apply {ps.model}`), "
                                  "refusing to install; --force overrides")
    if applied:
        phash = patch_hash(ws.read_lock(ps.model))
        failed = [f"{kind} verify failed (torch {v.get('torch')}, size {v.get('size')})"
                  for kind, v in sorted(current_verdicts(ws, ps.model, phash).items()) if not v.get("ok")]
        if failed and not force:
            raise VerifyFailedRefusal(f"{ps.model}: {'; '.join(failed)} for this patch set; refusing to install "
                                      "(--force overrides)")
    built = build(ws, ps, out_dir, progress=progress)
    progress(f"pip install {built.wheel.name}")
    # replace whatever is installed (upstream or an older patched build), then install: pip keeps every
    # dependency that already satisfies the wheel's requirements (torch included)
    for name in dict.fromkeys([pkg.dist, pkg.upstream_dist or pkg.dist]):
        _pip(["uninstall", "-y", name], f"pip uninstall {name}")
    _pip(["install", *([] if deps else ["--no-deps"]), str(built.wheel)], f"pip install {built.wheel.name}")
    return InstallResult(ps.model, "installed", f"{pkg.dist}=={built.version}", force, built)
