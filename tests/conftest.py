from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from patchkit import api
from patchkit.cli import main
from patchkit.codemods import HELPERS_MODULE, runtime_helpers

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"

# A codemod run on a lone source (no package) imports the runtime helpers absolutely, as `_patchkit_helpers`; the
# tests that execute such output find them here, as a patched tree finds its own copy.
sys.modules.setdefault(HELPERS_MODULE, runtime_helpers)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="session")
def chronos_vendored(tmp_path_factory) -> Path:
    """A workspace with chronos-forecasting 2.3.2 vendored from the package index (pristine only)."""
    root = tmp_path_factory.mktemp("chronos-ws")
    api.vendor("chronos2", root=root)
    return root


@pytest.fixture(scope="session")
def toto_ws(tmp_path_factory) -> Path:
    """A workspace with toto-ts 0.2.0 vendored from the package index and patched (shared: do not modify)."""
    root = tmp_path_factory.mktemp("toto-ws")
    api.vendor("toto", root=root)
    api.apply("toto", root=root)
    return root


@pytest.fixture(scope="session")
def kronos_ws(tmp_path_factory) -> Path:
    """A workspace with Kronos vendored from a local Kronos-shaped git repository and patched (shared: do not
    modify)."""
    from .kronos_repo import make_kronos_repo

    root = tmp_path_factory.mktemp("kronos-ws")
    repo = make_kronos_repo(root / "repo")
    api.vendor("kronos", repo.commits[-1], root=root, archive=str(repo.path))
    api.apply("kronos", root=root)
    return root


@pytest.fixture(scope="session")
def chronos_patched(chronos_vendored, tmp_path_factory) -> Path:
    """The vendored workspace, patched once (shared: do not modify; ``chronos_ws`` gives a private copy)."""
    root = tmp_path_factory.mktemp("chronos-patched") / "ws"
    shutil.copytree(chronos_vendored, root)
    api.apply("chronos2", root=root)
    return root


@pytest.fixture
def chronos_ws(chronos_patched, tmp_path) -> Path:
    """A private copy of the patched workspace (a copy, not a fresh apply: apply is deterministic, and its own
    tests run it on their copies)."""
    root = tmp_path / "ws"
    shutil.copytree(chronos_patched, root)
    return root


@pytest.fixture(scope="session")
def chronos_archive(tmp_path_factory) -> Path:
    """The real chronos-forecasting 2.3.2 sdist, downloaded once with pip."""
    dest = tmp_path_factory.mktemp("dl")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "chronos-forecasting==2.3.2", "-d", str(dest), "-q"],
        check=True,
    )
    return next(dest.iterdir())


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
