"""Run an upstream's own test-suite against a vendored tree, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from patchkit.patchset import UpstreamTests


@dataclass(frozen=True)
class UpstreamTestResult:
    tree: str
    command: list[str]
    passed: int
    failed: int
    errors: int
    skipped: int
    deselected: dict[str, str]
    failures: list[str] = field(default_factory=list)
    output_tail: str = ""
    #: test id -> passed | failed | error | skipped
    outcomes: dict[str, str] = field(default_factory=dict)
    #: failing test id -> first line of its error, the cause baseline failures are grouped by
    causes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0 and self.passed > 0

    @property
    def ran(self) -> bool:
        """Did the suite run at all (something passed or was skipped), rather than fail to start?"""
        return self.passed + self.skipped > 0


#: stands for the whole session when pytest wrote no report (it could not start or collect)
SESSION = "<pytest session>"


def _first_line(element: ET.Element) -> str:
    text = (element.get("message") or element.text or "").strip()
    line = text.splitlines()[0] if text else element.tag
    return line[:240]


def run_upstream_tests(tree: Path, spec: UpstreamTests, timeout: int = 3600,
                       python: str | Path | None = None) -> UpstreamTestResult:
    """Run ``spec`` on ``tree`` with ``python`` (default: this interpreter), parse pytest's JUnit XML."""
    tree = Path(tree).resolve()
    paths = [p for p in spec.paths if (tree / p).exists()]
    with tempfile.TemporaryDirectory(prefix="patchkit-upstream-tests-") as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [str(python or sys.executable), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
               "-o", "junit_family=xunit2", *spec.args]
        if spec.deselect:
            cmd += ["-k", "not (" + " or ".join(spec.deselect) + ")"]
        cmd += paths
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=timeout, env=env)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        passed = failed = errors = skipped = 0
        failures: list[str] = []
        outcomes: dict[str, str] = {}
        causes: dict[str, str] = {}
        if junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                failure, error = case.find("failure"), case.find("error")
                if failure is not None or error is not None:
                    bad = failure if failure is not None else error
                    if failure is not None:
                        failed += 1
                    else:
                        errors += 1
                    failures.append(name)
                    # a test can both fail and error in teardown: the first outcome is the one kept
                    outcomes.setdefault(name, "failed" if failure is not None else "error")
                    causes.setdefault(name, _first_line(bad))
                elif case.find("skipped") is not None:
                    skipped += 1
                    outcomes.setdefault(name, "skipped")
                else:
                    passed += 1
                    outcomes.setdefault(name, "passed")
        if not outcomes and proc.returncode not in (0, 5):  # 5: nothing collected
            errors = 1
            failures = [SESSION]
            outcomes = {SESSION: "error"}
            lines = [x for x in (proc.stdout + proc.stderr).strip().splitlines() if x.strip()]
            causes = {SESSION: (lines[-1] if lines else f"pytest exited {proc.returncode}")[:240]}
    return UpstreamTestResult(str(tree), cmd, passed, failed, errors, skipped, dict(spec.deselect), failures, tail,
                              outcomes, causes)


@dataclass(frozen=True)
class TestComparison:
    """Upstream's suite on the pristine target against the patched target, test by test."""

    #: did not fail on pristine, fails on patched: only these make a verdict ``regressed``
    regressions: dict[str, str]
    #: fail on both: cause (first error line on pristine) -> test ids
    baseline_failures: dict[str, list[str]]
    #: fail on pristine, pass on patched (unexpected; reported, never a failure)
    fixed: list[str]


def compare_runs(pristine: UpstreamTestResult, patched: UpstreamTestResult) -> TestComparison:
    bad = ("failed", "error")
    regressions = {name: patched.causes.get(name, "")
                   for name, outcome in patched.outcomes.items()
                   if outcome in bad and pristine.outcomes.get(name) not in bad}
    baseline: dict[str, list[str]] = {}
    for name, outcome in patched.outcomes.items():
        if outcome in bad and pristine.outcomes.get(name) in bad:
            baseline.setdefault(pristine.causes.get(name, ""), []).append(name)
    fixed = [name for name, outcome in pristine.outcomes.items()
             if outcome in bad and patched.outcomes.get(name) == "passed"]
    return TestComparison(regressions, dict(sorted(baseline.items(), key=lambda kv: -len(kv[1]))), fixed)
