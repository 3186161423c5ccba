"""Pre-upgrade check: will the patch set survive an upstream release?

For a target version: vendor it into a scratch directory (``vendor/`` is never
touched), dry-run the patch set (each codemod: applied, already fixed upstream,
or drifted), verify upstream vs patched target (breaks, recompiles, new break
sites no codemod covers, forecast drift) and run upstream's own tests against
the pristine and the patched target, test by test.

Verdicts:

- ``safe`` (exit 0): every step applied or already fixed, verify ok, no test regression;
- ``safe-with-baseline-failures`` (exit 0): as safe, but some upstream tests fail on the
  pristine target too (listed, grouped by their first error line);
- ``regressed`` (exit 1): breaks, recompiles, forecast drift, or an upstream test that
  passes on pristine and fails on patched;
- ``drift`` (exit 4): a codemod no longer applies;
- ``environment`` (exit 3): the pristine target cannot be imported or its tests cannot
  run in this environment, so nothing can be concluded about the patch.

The target's declared requirements (``Requires-Dist``) are compared with what is
installed, and each conflict is reported: they explain most baseline failures.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .apply import plan
from .distribute import upstream_requirements
from .errors import (EXIT_DRIFT, EXIT_ENVIRONMENT, EXIT_OK, EXIT_VERIFY_FAILED, EnvironmentProblem, NotVendored,
                     PatchkitError)
from .isolated import ensure_env
from .patchset import PatchSet
from .vendoring import fetch
from .verify.report import verify_trees
from .verify.upstream_tests import compare_runs, run_upstream_tests
from .workspace import write_tree

SCHEMA_VERSION = 2

VERDICT_EXIT = {"safe": EXIT_OK, "safe-with-baseline-failures": EXIT_OK, "regressed": EXIT_VERIFY_FAILED,
                "drift": EXIT_DRIFT, "environment": EXIT_ENVIRONMENT}


@dataclass(frozen=True)
class StepVerdict:
    codemod: str
    status: str  # applied | already-fixed | drifted | skipped
    files: list[str]
    sites: list[str]
    message: str


@dataclass(frozen=True)
class UpgradeReport:
    schema: int
    model: str
    pinned: str
    target: str
    verdict: str  # safe | safe-with-baseline-failures | regressed | drift | environment
    exit_code: int
    steps: list[StepVerdict]
    verify: dict[str, Any] | None
    uncovered_break_sites: list[dict]
    #: {"pristine": run, "patched": run, "regressions": {test: cause}, "baseline_failures": {cause: [tests]},
    #: "fixed": [tests]}; a run is {passed, failed, errors, skipped, deselected, failures, command}
    upstream_tests: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)
    torch_version: str = ""
    #: the environment the target ran in: "current" (this interpreter's)
    environment: str = "current"
    #: the target's Requires-Dist entries this environment does not satisfy, one line each
    dependency_conflicts: list[str] = field(default_factory=list)
    #: why the verdict is ``environment``
    environment_problems: list[str] = field(default_factory=list)
    #: wall time of the whole check of this target
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def upgrade_check(
    ps: PatchSet, target: str, *, pinned: str | None = None, archive: Path | None = None, verify: bool = True,
    upstream_tests: bool = True, backend: str = "inductor", tolerance: float | None = None,
    isolated: bool = False, progress: Callable[[str], None] = lambda msg: None,
) -> UpgradeReport:
    """Check ``target`` of ``ps``'s upstream.  ``isolated``: verify and upstream tests run in a cached
    virtual environment holding the target's own requirements (torch pinned to the running version)."""

    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix=f"patchkit-upgrade-{ps.model}-") as tmp:
        tmp_path = Path(tmp)
        progress(f"{ps.model} {target}: fetching")
        fetched = fetch(ps, target, tmp_path / "download", archive)
        result = plan(ps, fetched.files, fetched.version)
        steps = [
            StepVerdict(s.codemod, s.status, list(s.files),
                        [f"{o.path}:{x.line}" for o in s.outcomes for x in (o.matches or o.already)], s.message)
            for s in result.steps
        ]
        reasons = [f"codemod {s.codemod!r} drifted: {s.message}" for s in result.drifted]
        upstream_dir, patched_dir = tmp_path / "upstream", tmp_path / "patched"
        write_tree(upstream_dir, fetched.files)
        write_tree(patched_dir, result.files)
        verify_json, uncovered, tests_json, torch_version = None, [], None, ""
        env_problems: list[str] = []
        python, installed, environment = None, None, "current"
        if isolated:

            try:
                env = ensure_env(ps.model, fetched.version, _requirements(ps, fetched.files),
                                 extras=ps.upstream_tests.extras if ps.upstream_tests else (),
                                 runner_extra=ps.isolated_requires, progress=progress)
                python, installed, environment = env.python, env.installed(), env.label
            except EnvironmentProblem as e:
                env_problems.append(f"isolated environment: {e}")
        conflicts = [f"{fetched.version} {c}" for c in dependency_conflicts(ps, fetched.files, installed)]
        if verify and not env_problems:
            progress(f"{ps.model} {fetched.version}: verifying upstream vs patched")
            try:
                report, _ = verify_trees(ps, upstream_dir, patched_dir, fetched.version, backend=backend,
                                         tolerance=tolerance, python=python)
            except PatchkitError as e:
                if getattr(e, "variant", None) == "patched":
                    reasons.append(f"verify: the patched target failed to run: {str(e).splitlines()[0]}")
                else:  # the pristine target does not run here: nothing to conclude about the patch
                    env_problems.append(f"verify: the pristine target failed to run: {str(e).splitlines()[0]}")
            else:
                verify_json = report.to_json()
                for variant in ("upstream", "patched"):  # scratch paths mean nothing after the run
                    verify_json[variant].pop("tree", None)
                torch_version = report.torch_version
                uncovered = report.patched.break_sites
                reasons += [f"verify: {f}" for f in report.failures]
        if upstream_tests and ps.upstream_tests is not None and not env_problems:
            progress(f"{ps.model} {fetched.version}: running upstream's tests on the pristine target")
            pristine = run_upstream_tests(upstream_dir, ps.upstream_tests, python=python)
            progress(f"{ps.model} {fetched.version}: running upstream's tests on the patched target")
            patched = run_upstream_tests(patched_dir, ps.upstream_tests, python=python)
            cmp = compare_runs(pristine, patched)
            tests_json = {"pristine": _run_json(pristine), "patched": _run_json(patched),
                          "regressions": cmp.regressions, "baseline_failures": cmp.baseline_failures,
                          "fixed": cmp.fixed}
            if not pristine.ran:
                env_problems.append(f"upstream tests do not run on the pristine target: "
                                    f"{next(iter(pristine.causes.values()), 'no test passed')}")
            elif cmp.regressions:
                reasons.append(f"upstream tests: {len(cmp.regressions)} pass on pristine and fail on patched "
                               f"({patched.passed} passed on patched)")
    baseline = bool(tests_json and tests_json["baseline_failures"])
    if result.drifted:
        verdict = "drift"
    elif env_problems:
        verdict = "environment"
    elif reasons:
        verdict = "regressed"
    else:
        verdict = "safe-with-baseline-failures" if baseline else "safe"
    return UpgradeReport(SCHEMA_VERSION, ps.model, pinned or ps.pin, fetched.version, verdict, VERDICT_EXIT[verdict],
                         steps, verify_json, uncovered, tests_json, reasons, torch_version, environment, conflicts,
                         env_problems, round(time.perf_counter() - started, 1))


def _run_json(t) -> dict[str, Any]:
    out = {k: v for k, v in asdict(t).items() if k not in ("tree", "outcomes", "causes", "command", "output_tail")}
    out["command"] = " ".join(t.command[1:])
    return out


def _requirements(ps: PatchSet, files: dict[str, bytes]) -> list[str]:
    """The target's declared requirements; empty when the patch set names no metadata or it was not kept."""

    if ps.package is None:
        return []
    try:
        return upstream_requirements(files, ps.package)[0]
    except NotVendored:
        return []


def dependency_conflicts(ps: PatchSet, files: dict[str, bytes], installed: dict[str, str] | None = None) -> list[str]:
    """Each of the target's own requirements that an environment does not satisfy, as one line:
    ``requires transformers<5,>=4.49, installed 5.1.0``.  ``installed`` maps normalised names to versions
    (default: this interpreter's).  Extras and markers that do not apply are skipped; a target whose
    metadata was not kept yields nothing."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    def version_of(name: str) -> str | None:
        if installed is not None:
            return installed.get(name.lower().replace("_", "-"))
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    out = []
    for line in _requirements(ps, files):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        have = version_of(req.name)
        if have is None:
            out.append(f"requires {req}, not installed")
        elif req.specifier and not req.specifier.contains(have, prereleases=True):
            out.append(f"requires {req}, installed {have}")
    return out


# -- rendering -------------------------------------------------------------------


def dump_json(reports: list[UpgradeReport] | UpgradeReport, path: Path) -> None:
    data = [r.to_json() for r in reports] if isinstance(reports, list) else reports.to_json()
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
