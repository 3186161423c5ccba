"""The wheel installs one import package, patchkit, with the top-level folders mapped into it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_has_only_patchkit(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("patchkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"patchkit"}
    for part in ("codemods/isnan_guard.py", "codemods/runtime_helpers.py", "patches/chronos2/__init__.py",
                 "patches/kronos/decode_cache.py", "patches/toto/aot.py", "verify/report.py", "cli.py"):
        assert f"patchkit/{part}" in names
    assert not any("vendor" in n.split("/")[:2] for n in names)
    assert not any(n.startswith(("verify/", "codemods/", "patches/", "tests/")) for n in names)
