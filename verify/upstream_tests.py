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

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0 and self.passed > 0


def run_upstream_tests(tree: Path, spec: UpstreamTests, timeout: int = 3600) -> UpstreamTestResult:
    tree = Path(tree).resolve()
    paths = [p for p in spec.paths if (tree / p).exists()]
    with tempfile.TemporaryDirectory(prefix="patchkit-upstream-tests-") as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
               "-o", "junit_family=xunit2", *spec.args]
        if spec.deselect:
            cmd += ["-k", "not (" + " or ".join(spec.deselect) + ")"]
        cmd += paths
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=timeout, env=env)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        passed = failed = errors = skipped = 0
        failures: list[str] = []
        if junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                if case.find("failure") is not None:
                    failed += 1
                    failures.append(name)
                elif case.find("error") is not None:
                    errors += 1
                    failures.append(name)
                elif case.find("skipped") is not None:
                    skipped += 1
                else:
                    passed += 1
        elif proc.returncode != 0:
            errors = 1
    return UpstreamTestResult(str(tree), cmd, passed, failed, errors, skipped, dict(spec.deselect), failures, tail)
