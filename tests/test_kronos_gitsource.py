"""patchkit.gitsource.export_tree against the Kronos-shaped fixture repository (no network)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import git
import pytest

from patchkit.gitsource import (
    GitSourceError,
    NotARepository,
    NothingIncluded,
    RefNotFound,
    RepoUnreachable,
    export_tree,
)

from .kronos_repo import make_kronos_repo

INCLUDE = (("model/", "model/"),)


@pytest.fixture(scope="module")
def kronos_repo(tmp_path_factory):
    return make_kronos_repo(tmp_path_factory.mktemp("kronos"))


@pytest.mark.parametrize("which", [0, 1])
def test_exports_only_model_at_each_commit(kronos_repo, tmp_path: Path, which: int) -> None:
    sha = kronos_repo.commits[which]
    info = export_tree(str(kronos_repo.path), sha, INCLUDE, (), tmp_path / "tree")
    assert info["commit"] == sha
    assert set(info["files"]) == {"model/__init__.py", "model/kronos.py", "model/module.py"}
    assert sorted(p.relative_to(tmp_path / "tree").as_posix() for p in (tmp_path / "tree").rglob("*") if p.is_file()) == sorted(info["files"])
    repo = git.Repo(kronos_repo.path)
    for rel, digest in info["files"].items():
        data = (tmp_path / "tree" / rel).read_bytes()
        assert data == repo.commit(sha).tree[rel].data_stream.read()
        assert hashlib.sha256(data).hexdigest() == digest
    module = (tmp_path / "tree" / "model/module.py").read_bytes()
    assert module.count(b"\r\n") == module.count(b"\n") > 0  # CRLF kept byte for byte
    assert b"\r\n" not in (tmp_path / "tree" / "model/kronos.py").read_bytes()


def test_two_commits_differ(kronos_repo, tmp_path: Path) -> None:
    a = export_tree(str(kronos_repo.path), kronos_repo.commits[0], INCLUDE, (), tmp_path / "a")
    b = export_tree(str(kronos_repo.path), "HEAD", INCLUDE, (), tmp_path / "b")
    assert b["commit"] == kronos_repo.commits[1]
    assert a["files"]["model/kronos.py"] != b["files"]["model/kronos.py"]
    assert a["files"]["model/__init__.py"] == b["files"]["model/__init__.py"]


def test_never_reads_blobs_outside_include(tmp_path: Path) -> None:
    """Delete the big data file's blob from the object store: exporting model/ must not notice."""
    fx = make_kronos_repo(tmp_path / "src")
    repo = git.Repo(fx.path)
    blob = repo.commit(fx.commits[1]).tree[fx.big_file]
    loose = Path(repo.git_dir) / "objects" / blob.hexsha[:2] / blob.hexsha[2:]
    assert loose.exists()
    loose.unlink()
    info = export_tree(str(fx.path), fx.commits[1], INCLUDE, (), tmp_path / "out")
    assert all(rel.startswith("model/") for rel in info["files"])
    assert not (tmp_path / "out" / "finetune_csv").exists()


def test_bare_mirror_and_dot_git(kronos_repo, tmp_path: Path) -> None:
    mirror = make_kronos_repo(tmp_path / "m", bare_mirror=True)
    info = export_tree(str(mirror.path), mirror.commits[0], INCLUDE, (), tmp_path / "bare")
    assert info["commit"] == mirror.commits[0]
    dotgit = export_tree(str(kronos_repo.path / ".git"), kronos_repo.commits[1], INCLUDE, (), tmp_path / "dotgit")
    assert dotgit["commit"] == kronos_repo.commits[1]


def test_url_clone(kronos_repo, tmp_path: Path) -> None:
    info = export_tree(kronos_repo.path.as_uri(), kronos_repo.commits[0], INCLUDE, (), tmp_path / "t")
    assert info["commit"] == kronos_repo.commits[0]
    assert (tmp_path / "t/model/module.py").exists()


def test_include_pairs_and_exclude(kronos_repo, tmp_path: Path) -> None:
    info = export_tree(str(kronos_repo.path), "HEAD", [("model", "vendored/model"), "requirements.txt"],
                       ["vendored/model/__init__.py"], tmp_path / "t")
    assert set(info["files"]) == {"vendored/model/kronos.py", "vendored/model/module.py", "requirements.txt"}


def test_errors(kronos_repo, tmp_path: Path) -> None:
    with pytest.raises(RefNotFound, match="0123abcd"):
        export_tree(str(kronos_repo.path), "0123abcd", INCLUDE, (), tmp_path / "a")
    with pytest.raises(RefNotFound):
        export_tree(str(kronos_repo.path), "no-such-branch", INCLUDE, (), tmp_path / "a")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotARepository):
        export_tree(str(plain), "HEAD", INCLUDE, (), tmp_path / "a")
    with pytest.raises(NotARepository):
        export_tree(str(tmp_path / "missing"), "HEAD", INCLUDE, (), tmp_path / "a")
    with pytest.raises(RepoUnreachable):
        export_tree((tmp_path / "missing.git").as_uri(), "HEAD", INCLUDE, (), tmp_path / "a")
    with pytest.raises(NothingIncluded):
        export_tree(str(kronos_repo.path), "HEAD", ["nothing/here/"], (), tmp_path / "a")
    for cls in (RefNotFound, NotARepository, RepoUnreachable, NothingIncluded):
        assert issubclass(cls, GitSourceError)
    assert not list(tmp_path.glob("a/**/*.py"))


def test_does_not_import_upstream(kronos_repo, tmp_path: Path) -> None:
    import sys

    before = {m for m in sys.modules if m == "model" or m.startswith("model.")}
    export_tree(str(kronos_repo.path), "HEAD", INCLUDE, (), tmp_path / "t")
    assert {m for m in sys.modules if m == "model" or m.startswith("model.")} == before
    shutil.rmtree(tmp_path / "t")
