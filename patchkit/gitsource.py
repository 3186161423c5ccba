"""Vendor files from a git repository at one commit, without checking out a work tree.

``export_tree`` reads blobs straight from the commit's tree through gitpython's
object database, so only the included paths are ever read (with a partial
clone, only their blobs are fetched).  Upstream code is never imported.

* A local path (a work tree, a ``.git`` folder, or a bare repository/mirror) is
  opened in place, never cloned.
* Anything else that looks like a URL (``https://``, ``ssh://``, ``git://``,
  ``file://``, ``user@host:path``) is cloned bare into a temporary folder, as a
  blob-less partial clone where the server supports it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence

_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)


class GitSourceError(Exception):
    """Vendoring from a git source failed."""


class RefNotFound(GitSourceError):
    """The requested branch, tag or commit does not exist in the repository."""


class RepoUnreachable(GitSourceError):
    """The repository URL could not be cloned (network, authentication, no such repository)."""


class NotARepository(GitSourceError):
    """A local path that is not a git repository."""


class UnsafeEntry(GitSourceError):
    """The commit holds an entry patchkit will not write (a symlink)."""


class NothingIncluded(GitSourceError):
    """An include prefix matched no file at the requested commit."""


def _normalise_include(include: Iterable[str | Sequence[str]]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for item in include:
        src, dst = (item, item) if isinstance(item, str) else (item[0], item[1])
        pairs.append((str(PurePosixPath(src)) if src not in ("", ".", "/") else "", dst.strip("/")))
    return pairs


def _under(path: str, prefix: str) -> str | None:
    """``path`` relative to ``prefix`` when it lies under it (``prefix`` "" is the root)."""
    if not prefix:
        return path
    if path == prefix:
        return PurePosixPath(path).name
    if path.startswith(prefix + "/"):
        return path[len(prefix) + 1 :]
    return None


def _run_git(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)


@contextmanager
def _open_repo(url_or_path: str) -> Iterator["object"]:
    import git

    candidate = Path(url_or_path).expanduser()
    if candidate.exists() or not _URL.match(url_or_path):
        if not candidate.exists():
            raise NotARepository(f"{url_or_path}: no such directory")
        if not candidate.is_dir():
            raise NotARepository(f"{url_or_path}: not a directory, so not a git repository")
        probe = _run_git(["-C", str(candidate), "rev-parse", "--git-dir"])
        if "dubious ownership" in probe.stderr:
            raise NotARepository(
                f"{url_or_path}: git refuses a repository owned by another user (dubious ownership); "
                f"add it with `git config --global --add safe.directory {candidate}`"
            )
        try:
            repo = git.Repo(candidate, search_parent_directories=False)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as err:
            raise NotARepository(f"{url_or_path}: not a git repository (work tree, .git folder or bare)") from err
        # Point every git call at the object store itself: a mirror without a
        # config file is otherwise taken for a work tree rooted at its parent.
        repo.git.update_environment(GIT_DIR=str(repo.git_dir))
        try:
            yield repo
        finally:
            repo.close()
        return

    tmp = Path(tempfile.mkdtemp(prefix="patchkit-git-"))
    try:
        dest = tmp / "repo.git"
        attempts = (
            ["clone", "--quiet", "--bare", "--filter=blob:none", url_or_path, str(dest)],
            ["clone", "--quiet", "--bare", url_or_path, str(dest)],
        )
        errors: list[str] = []
        for args in attempts:
            done = _run_git(args)
            if done.returncode == 0:
                break
            errors.append(done.stderr.strip())
            shutil.rmtree(dest, ignore_errors=True)
        else:
            raise RepoUnreachable(f"cannot clone {url_or_path}: {errors[-1] or 'git clone failed'}")
        repo = git.Repo(dest)
        try:
            yield repo
        finally:
            repo.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _resolve(repo, ref: str):  # type: ignore[no-untyped-def]
    import git
    from gitdb.exc import BadName, BadObject

    def lookup():
        commit = repo.commit(ref)
        commit.tree  # noqa: B018 - forces the object to be read
        return commit

    try:
        return lookup()
    except (BadName, BadObject, ValueError, git.GitCommandError):
        pass
    # A commit that no fetched branch reaches: ask the remote for it directly.
    if repo.remotes and re.fullmatch(r"[0-9a-fA-F]{7,40}", ref):
        done = _run_git(["fetch", "--quiet", "origin", ref], cwd=Path(repo.git_dir))
        if done.returncode == 0:
            try:
                return lookup()
            except (BadName, BadObject, ValueError, git.GitCommandError):
                pass
    raise RefNotFound(f"{ref!r} is not a branch, tag or commit of {repo.git_dir}")


def export_tree(
    url_or_path: str,
    ref: str,
    include: Iterable[str | Sequence[str]],
    exclude: Iterable[str],
    dest: Path,
    optional: Callable[[str], str | None] = lambda path: None,
) -> dict:
    """Write the files under the ``include`` prefixes of ``ref``'s tree into ``dest``.

    ``include`` holds ``(repo_prefix, dest_prefix)`` pairs (a bare string means
    the same prefix on both sides); ``exclude`` holds dest-relative prefixes that
    are dropped even though an include matched.  File bytes are copied exactly
    (line endings included); the executable bit is kept.  ``optional(path)``
    names where a repository file that need not exist (a licence) goes, or None.

    Returns ``{"commit": <full sha>, "files": {dest_relpath: sha256 hex}}``.
    Raises ``NotARepository``, ``RepoUnreachable``, ``RefNotFound`` or
    ``NothingIncluded`` (all ``GitSourceError``).
    """
    pairs = _normalise_include(include)
    if not pairs:
        raise GitSourceError("nothing to export: include is empty")
    excluded = [str(PurePosixPath(e)) for e in exclude]
    dest = Path(dest)
    files: dict[str, str] = {}
    with _open_repo(url_or_path) as repo:
        commit = _resolve(repo, ref)
        blobs = [item for item in commit.tree.traverse() if item.type == "blob"]
        for blob in blobs:  # licence / requirement files: kept where present, never required
            out_rel = optional(blob.path)
            if out_rel is not None and blob.mode != 0o120000:
                data = blob.data_stream.read()
                (dest / out_rel).parent.mkdir(parents=True, exist_ok=True)
                (dest / out_rel).write_bytes(data)
                files[out_rel] = hashlib.sha256(data).hexdigest()
        for src_prefix, dst_prefix in pairs:
            matched = 0
            for blob in blobs:
                rel = _under(blob.path, src_prefix)
                if rel is None:
                    continue
                if blob.path == src_prefix:  # a single file: dst_prefix names the file itself
                    out_rel = dst_prefix or rel
                else:
                    out_rel = f"{dst_prefix}/{rel}" if dst_prefix else rel
                if any(_under(out_rel, e) is not None for e in excluded):
                    continue
                matched += 1
                data = blob.data_stream.read()
                target = dest / out_rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if blob.mode == 0o120000:  # a link could point outside the vendored tree
                    raise UnsafeEntry(f"{blob.path} at {commit.hexsha[:12]} is a symlink; refusing to vendor links")
                else:
                    target.write_bytes(data)
                    if blob.mode & 0o111:
                        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                files[out_rel] = hashlib.sha256(data).hexdigest()
            if matched == 0:
                raise NothingIncluded(
                    f"include {src_prefix or '/'!r} matched no file at {commit.hexsha} of {url_or_path}"
                )
        return {"commit": commit.hexsha, "files": dict(sorted(files.items()))}
