"""Where vendored trees and locks live, and small atomic file-system helpers.

Layout under the workspace root (default: the current directory)::

    vendor/<model>.lock.json      committed: pin, archive sha256, file hashes
    vendor/.pristine/<model>/     generated: upstream exactly as released
    vendor/<model>/               generated: the patched tree (put it first on sys.path)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import LockMismatch, NotVendored, json_error

LOCK_FORMAT = 1


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_files(root: Path) -> dict[str, Path]:
    """All regular files under ``root`` keyed by posix relative path, sorted."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
            found[path.relative_to(root).as_posix()] = path
    return found


def hash_tree(root: Path) -> dict[str, str]:
    return {rel: sha256_file(p) for rel, p in tree_files(root).items()}


def read_tree(root: Path) -> dict[str, bytes]:
    return {rel: p.read_bytes() for rel, p in tree_files(root).items()}


def publish(tmp: Path, dest: Path) -> None:
    """Rename a finished temporary file (from ``mkstemp``, so private) into place with the mode an ordinary
    new file gets under this process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or what it held before: written beside it, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_tree(dest: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def vendor_dir(self) -> Path:
        return self.root / "vendor"

    def pristine(self, model: str) -> Path:
        return self.vendor_dir / ".pristine" / model

    def patched(self, model: str) -> Path:
        return self.vendor_dir / model

    def lock_path(self, model: str) -> Path:
        return self.vendor_dir / f"{model}.lock.json"

    def scratch(self) -> Path:
        return self.vendor_dir / ".scratch"

    # -- locks ---------------------------------------------------------------
    def read_lock(self, model: str) -> dict[str, Any] | None:
        """The lock of ``model`` (``None`` when there is none); a lock of the wrong shape is ``LockMismatch``."""
        path = self.lock_path(model)
        if not path.exists():
            return None
        fix = f"`patchkit vendor {model}` rewrites it"
        try:
            lock = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LockMismatch(f"{path} is not valid JSON ({json_error(err)}); {fix}") from err
        problem = lock_shape_problem(lock, model)
        if problem:
            raise LockMismatch(f"{path}: {problem}; {fix}")
        return lock

    def write_lock(self, model: str, lock: dict[str, Any]) -> None:
        atomic_write_text(self.lock_path(model), json.dumps(lock, indent=2, sort_keys=True) + "\n")

    def require_pristine(self, model: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The lock and the pristine tree's files (read once), checked byte for byte against each other."""
        lock = self.read_lock(model)
        tree = self.pristine(model)
        if lock is None or not tree.is_dir():
            raise NotVendored(f"{model} is not vendored here; run `patchkit vendor {model}` first")
        files = read_tree(tree)
        check_tree_against(tree, files, lock["files"], what=f"vendored upstream of {model}",
                           lock_path=self.lock_path(model),
                           fix=f"`patchkit vendor {model} --refresh` fetches it again")
        return lock, files

    # -- atomic replacement of a whole tree ----------------------------------
    @contextmanager
    def staging(self, label: str) -> Iterator[Path]:
        """A fresh directory on the same file system as vendor/, removed on failure."""
        made = not self.vendor_dir.exists()
        self.vendor_dir.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f".staging-{label}-", dir=self.vendor_dir))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            if made and not any(self.vendor_dir.iterdir()):
                self.vendor_dir.rmdir()  # a failed first vendor leaves no empty vendor/

    def swap_in(self, staged: Path, dest: Path) -> None:
        """Replace ``dest`` by ``staged``: two renames, recoverable if interrupted."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        previous = dest.parent / f".previous-{dest.name}"
        recover(dest)
        if dest.exists():
            os.rename(dest, previous)
        os.rename(staged, dest)
        shutil.rmtree(previous, ignore_errors=True)


def lock_shape_problem(lock: Any, model: str) -> str:
    """What is wrong with a parsed lock's shape ("" when nothing)."""
    if not isinstance(lock, dict):
        return f"a lock is a JSON object, this is a JSON {type(lock).__name__}"
    if lock.get("format") != LOCK_FORMAT:
        return f"lock format {lock.get('format')!r}, this patchkit reads format {LOCK_FORMAT}"
    if lock.get("model") != model:
        return f"a lock of {lock.get('model')!r}, not {model!r}"
    for key, kind in (("version", str), ("source", dict), ("files", dict)):
        if not isinstance(lock.get(key), kind):
            return f"its {key!r} is missing or not a {'string' if kind is str else 'JSON object'}"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in lock["files"].items()):
        return "its 'files' are not path -> sha256 strings"
    if "patched" in lock and not (isinstance(lock["patched"], dict) and isinstance(lock["patched"].get("files"), dict)):
        return "its 'patched' record is not an object with 'files'"
    return ""


def recover(dest: Path) -> None:
    """Finish or undo a swap interrupted between its two renames."""
    previous = dest.parent / f".previous-{dest.name}"
    if previous.exists():
        if dest.exists():
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.rename(previous, dest)


def check_tree_against(tree: Path, files: dict[str, bytes], expected: dict[str, str], *, what: str,
                       lock_path: Path, fix: str = "") -> None:
    """Raise ``LockMismatch`` unless ``files`` (the contents of ``tree``) hash to ``expected``."""
    actual = {rel: sha256_bytes(data) for rel, data in files.items()}
    changed = sorted(rel for rel in expected if rel in actual and actual[rel] != expected[rel])
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    problems = []
    if changed:
        problems.append(f"edited: {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}")
    if missing:
        problems.append(f"missing: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if extra:
        problems.append(f"unexpected: {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}")
    if problems:
        raise LockMismatch(
            f"{what} at {tree} does not match {lock_path.name} ({'; '.join(problems)}); "
            f"vendored files are generated, do not edit them by hand ({fix or 're-vendor to restore'})"
        )
