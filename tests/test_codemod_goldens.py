"""Golden tests for every codemod: tests/fixtures/<codemod-name>/<case>.in.py -> <case>.out.py.

``untouched_*.in.py`` cases have no .out.py and must come out byte-identical.
``<case>.options.json`` (or the folder's ``options.json``) holds the codemod options.  Every expected output is
also run again to prove idempotence.  Adding a case is adding files.
"""

from __future__ import annotations

import json
from pathlib import Path

import libcst as cst
import pytest

from patchkit.codemods import REGISTRY, run_codemod

from .conftest import FIXTURES


def _cases():
    for case_in in sorted(FIXTURES.glob("*/*.in.py")):
        name = case_in.parent.name
        if name not in REGISTRY:
            continue
        yield pytest.param(name, case_in, id=f"{name}/{case_in.name[:-6]}")


def _options(case_in: Path) -> dict:
    """``<case>.options.json``, else the folder's ``options.json``, else no options."""
    for opts in (case_in.with_name(case_in.name[:-6] + ".options.json"), case_in.parent / "options.json"):
        if opts.exists():
            return json.loads(opts.read_text())
    return {}


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as fh:  # keep CRLF as it is on disk
        return fh.read()


CASES = list(_cases())


def test_every_codemod_has_golden_cases():
    covered = {p.values[0] for p in CASES}
    assert covered == set(REGISTRY), f"codemods without fixtures: {set(REGISTRY) - covered}"
    for name in REGISTRY:
        assert any(p.values[1].name.startswith("untouched_") for p in CASES if p.values[0] == name), name


@pytest.mark.parametrize("name,case_in", CASES)
def test_golden(name: str, case_in: Path) -> None:
    source = _read(case_in)
    case_out = case_in.with_name(case_in.name[:-6] + ".out.py")
    result = run_codemod(REGISTRY[name], source, filename=case_in.name, options=_options(case_in))
    if case_in.name.startswith("untouched_"):
        assert not case_out.exists(), "untouched cases carry no .out.py"
        assert result.code == source
        assert not result.matches
        return
    expected = _read(case_out)
    assert result.code == expected
    assert result.matches, "a rewriting case must report where it matched"
    assert all(site.line > 0 for site in result.matches)
    cst.parse_module(result.code)


@pytest.mark.parametrize("name,case_in", [p for p in CASES if not p.values[1].name.startswith("untouched_")])
def test_idempotent(name: str, case_in: Path) -> None:
    expected = _read(case_in.with_name(case_in.name[:-6] + ".out.py"))
    again = run_codemod(REGISTRY[name], expected, filename=case_in.name, options=_options(case_in))
    assert again.code == expected
    assert not again.matches
    assert again.already, "an already-patched file must be recognised as such"


@pytest.mark.parametrize("name", sorted({p.values[0] for p in CASES if "crlf" in p.values[1].name}))
def test_crlf_cases_keep_crlf(name: str) -> None:
    for case_in in (FIXTURES / name).glob("*crlf*.in.py"):
        if case_in.name.startswith("untouched_"):
            continue
        out = _read(case_in.with_name(case_in.name[:-6] + ".out.py"))
        assert "\r\n" in _read(case_in) and out.count("\r\n") == out.count("\n") > 0


@pytest.mark.parametrize("name,case", [("isnan-guard", "assert_async"), ("rope-static-cache", "renamed_crlf")])
def test_runs_under_libcst_tool(name: str, case: str, tmp_path: Path) -> None:
    """``python -m libcst.tool codemod -x patchkit.codemods.<module>.<Class> FILE --option JSON`` gives the
    golden output: patch-set options become command-line flags."""
    import subprocess
    import sys

    case_in = FIXTURES / name / f"{case}.in.py"
    target = tmp_path / "target.py"
    target.write_bytes(case_in.read_bytes())
    cls = REGISTRY[name]
    flags = [x for key, value in _options(case_in).items()
             for x in (f"--{key.replace('_', '-')}", value if isinstance(value, str) else json.dumps(value))]
    proc = subprocess.run(
        [sys.executable, "-m", "libcst.tool", "codemod", "-x", "--no-format", "--hide-progress",
         f"{cls.__module__}.{cls.__name__}", str(target), *flags],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _read(target) == _read(case_in.with_name(f"{case}.out.py"))
