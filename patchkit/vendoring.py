"""Fetch an upstream release and lay its sources down as the pristine tree.

pip sources: ``pip download --no-deps`` of the sdist or wheel (pip does the
index talk, hashing and retries); the archive is then read member by member
with path-traversal, link and device protection, keeping only the patch set's
``include`` prefixes.  git sources: see ``gitsource``.  Nothing from the
upstream is imported or executed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import (BadInput, CorruptArchive, LockMismatch, MissingTool, NoNetwork, PatchkitError, UnknownVersion,
                     UpstreamDrift)
from .patchset import GitSource, PatchSet, PipSource
from .workspace import LOCK_FORMAT, Workspace, hash_tree, sha256_bytes, sha256_file, write_tree

_NETWORK_PATTERNS = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|Connection refused|ConnectTimeout|ReadTimeout|"
    r"ProxyError|Max retries exceeded|SSLError|Could not fetch URL",
)


@dataclass(frozen=True)
class VendorResult:
    model: str
    version: str
    source: str
    archive_sha256: str
    files: int
    pristine: Path
    lock: Path
    unchanged: bool


@dataclass(frozen=True)
class Fetched:
    """Upstream files in memory, plus what identifies their origin."""

    version: str
    files: dict[str, bytes]
    origin: dict[str, str]  # recorded in the lock under "source"
    #: where the files were read from, when not the origin itself (a local clone or mirror)
    read_from: str = ""


def check_version(ps: PatchSet, version: str, option: str = "--version") -> None:
    """A pip release is named by a PEP 440 version; anything else is bad input (exit 2) before pip runs."""
    if not isinstance(ps.source, PipSource):
        return
    from packaging.version import InvalidVersion, Version

    try:
        Version(version)
    except InvalidVersion:
        known = ", ".join(ps.known_versions)
        raise UnknownVersion(f"{option} {version!r} is not a PEP 440 version (e.g. {ps.pin}); "
                             f"known {ps.model} versions: {known}") from None


def fetch(ps: PatchSet, version: str, workdir: Path, archive: str | Path | None = None) -> Fetched:
    """Download (or read ``archive``: a local sdist/wheel, or for git a repository URL or path)
    and return the included files; nothing is written outside ``workdir``."""
    if isinstance(ps.source, PipSource):
        archive = pip_download(ps.source, version, workdir) if archive is None else Path(archive)
        files = read_archive(archive, ps.source)
        origin = {
            "kind": "pip",
            "package": ps.source.package,
            "dist": ps.source.dist,
            "archive": archive.name,
            "sha256": sha256_file(archive),
        }
        return Fetched(version, files, origin)
    if isinstance(ps.source, GitSource):
        return _fetch_git(ps.source, version, workdir, str(archive) if archive else ps.source.url)
    raise PatchkitError(f"unsupported source {ps.source!r}")  # pragma: no cover


def vendor(ws: Workspace, ps: PatchSet, version: str | None = None, archive: str | Path | None = None, *,
           refresh: bool = False) -> VendorResult:
    """Vendor ``ps`` at ``version`` (default: its pin) into ``vendor/.pristine/<model>`` and lock it.

    Atomic: the pristine tree and lock are replaced only after the whole
    archive was fetched, checked and extracted.  Re-vendoring the locked
    version verifies the archive against the lock's sha256.  When the lock
    already holds that version and the pristine tree matches it, nothing is
    fetched (so a re-run works offline), unless ``refresh`` or ``archive``.
    """
    version = version or ps.pin
    check_version(ps, version)
    try:
        old = ws.read_lock(ps.model)
    except LockMismatch:
        old = None  # a damaged lock is rewritten from what is fetched now
    if old and not refresh and archive is None and _same_version(ps, old["version"], version):
        pristine = ws.pristine(ps.model)
        if pristine.is_dir() and hash_tree(pristine) == old["files"]:
            return VendorResult(model=ps.model, version=old["version"], source=_describe_origin(old["source"]),
                                archive_sha256=old["source"].get("sha256", ""), files=len(old["files"]),
                                pristine=pristine, lock=ws.lock_path(ps.model), unchanged=True)
    with ws.staging(ps.model) as stage:
        fetched = fetch(ps, version, stage / "download", archive)
        if old and old.get("version") == fetched.version:
            want = old.get("source", {}).get("sha256")
            got = fetched.origin.get("sha256")
            if want and got and want != got:
                raise LockMismatch(
                    f"{fetched.origin.get('archive')} has sha256 {got[:12]}..., but {ws.lock_path(ps.model).name} "
                    f"pins {want[:12]}... for {ps.model} {fetched.version}; refusing a changed upstream archive"
                )
        tree = stage / "tree"
        tree.mkdir()
        write_tree(tree, fetched.files)
        lock = {
            "format": LOCK_FORMAT,
            "model": ps.model,
            "version": fetched.version,
            "source": fetched.origin,
            "files": {rel: sha256_bytes(data) for rel, data in sorted(fetched.files.items())},
        }
        unchanged = bool(old) and {k: old.get(k) for k in lock} == lock and ws.pristine(ps.model).is_dir()
        if unchanged:
            unchanged = hash_tree(ws.pristine(ps.model)) == lock["files"]
        if not unchanged:
            if old and "patched" in old and old.get("version") == lock["version"]:
                lock["patched"] = old["patched"]
            ws.swap_in(tree, ws.pristine(ps.model))
            ws.write_lock(ps.model, lock)
    return VendorResult(
        model=ps.model,
        version=fetched.version,
        source=_describe_origin(fetched.origin, fetched.read_from),
        archive_sha256=fetched.origin.get("sha256", ""),
        files=len(fetched.files),
        pristine=ws.pristine(ps.model),
        lock=ws.lock_path(ps.model),
        unchanged=unchanged,
    )


def _same_version(ps: PatchSet, locked: str, wanted: str) -> bool:
    """Does the locked version answer a request for ``wanted``?  git: a commit sha, or its prefix of 7+ digits
    (a branch or tag name may have moved, so it is fetched again)."""
    if isinstance(ps.source, GitSource):
        return len(wanted) >= 7 and locked.startswith(wanted.lower())
    return locked == wanted


def _describe_origin(origin: dict[str, str], read_from: str = "") -> str:
    if origin.get("kind") == "pip":
        return f"{origin.get('package')} {origin.get('dist')} {origin.get('archive')}"
    if read_from and read_from != origin.get("url"):
        return f"git {read_from} @ {str(origin.get('commit'))[:12]} (a copy of {origin.get('url')})"
    return f"git {origin.get('url')} @ {str(origin.get('commit'))[:12]}"


# -- git ----------------------------------------------------------------------
def _fetch_git(src: GitSource, ref: str, workdir: Path, url: str) -> Fetched:
    from . import gitsource  # gitpython is imported only for git sources

    tree = workdir / "git-export"
    try:
        exported = gitsource.export_tree(url, ref, src.include, src.exclude, tree,
                                         optional=lambda path: meta_target(path, src.meta))
    except gitsource.RefNotFound as err:
        raise UnknownVersion(str(err)) from err
    except gitsource.RepoUnreachable as err:
        model = next((name for name in _models_of(src)), "MODEL")
        raise NoNetwork(f"{err}; vendor from a local clone or mirror instead: `patchkit vendor {model} --from PATH` "
                        f"(./VERIFY_FIXES.sh: set PATCHKIT_{model.upper()}_FROM=PATH)") from err
    except gitsource.NothingIncluded as err:
        raise UpstreamDrift(f"upstream layout changed: {err}") from err
    except gitsource.GitSourceError as err:  # NotARepository, UnsafeEntry
        raise BadInput(str(err)) from err
    files = {rel: (tree / rel).read_bytes() for rel in exported["files"]}
    # the lock names the canonical upstream: a commit sha identifies the content wherever it was read from
    return Fetched(exported["commit"], files, {"kind": "git", "url": src.url, "commit": exported["commit"]},
                   read_from=str(url))


def _models_of(src: GitSource):
    from . import patches

    return (name for name in patches.names() if patches.get(name).source == src)


# -- pip ----------------------------------------------------------------------
def pip_download(src: PipSource, version: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    fmt = ["--no-binary", ":all:"] if src.dist == "sdist" else ["--only-binary", ":all:"]
    # -vv: pip names unreachable index pages ("Could not fetch URL ... connection error") only when verbose
    cmd = [sys.executable, "-m", "pip", "download", "-vv", "--no-deps", "--disable-pip-version-check",
           "--no-input", *fmt, f"{src.package}=={version}", "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError as err:  # pragma: no cover
        raise MissingTool(f"cannot run pip ({err})") from err
    except subprocess.TimeoutExpired as err:
        raise NoNetwork(f"pip download {src.package}=={version} timed out after 900 s") from err
    err_text = proc.stderr + proc.stdout
    if proc.returncode != 0:
        if "No module named pip" in err_text:
            raise MissingTool("pip is not installed in this Python environment")
        if _NETWORK_PATTERNS.search(err_text):
            raise NoNetwork(
                f"cannot reach the package index to download {src.package}=={version} (no network?)"
            )
        m = re.search(r"\(from versions: ([^)]*)\)", err_text)
        if "No matching distribution" in err_text or m:
            known = m.group(1).strip() if m else ""
            hint = f"; published: {known}" if known and known != "none" else ""
            raise UnknownVersion(f"{src.package} has no {src.dist} for version {version!r} on the index{hint}")
        last = [line for line in err_text.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
        raise NoNetwork(f"pip download {src.package}=={version} failed: {last[0].strip()}")
    archives = sorted(p for p in dest.iterdir() if p.is_file())
    if len(archives) != 1:
        raise CorruptArchive(f"pip download produced {len(archives)} files for {src.package}=={version}")
    return archives[0]


# -- archives -----------------------------------------------------------------
def _safe_member(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name)
    if "\x00" in name or p.is_absolute() or ".." in p.parts or name.startswith(("/", "\\")) or ":" in p.parts[0]:
        raise CorruptArchive(f"{archive.name}: refusing unsafe member path {name!r} (path traversal)")
    return p


#: where a source's licence, notice and metadata files land in the vendored tree
META_DIR = ".upstream"


def meta_target(path: str, patterns: tuple[str, ...]) -> str | None:
    """``.upstream/<name>`` when ``path`` matches one of ``patterns`` (``*``: within one segment)."""
    for pattern in patterns:
        if re.fullmatch("[^/]*".join(re.escape(part) for part in pattern.split("*")), path):
            return f"{META_DIR}/{PurePosixPath(path).name}"
    return None


def _select(rel: PurePosixPath, src: PipSource) -> str | None:
    text = rel.as_posix()
    if (meta := meta_target(text, src.meta)) is not None:
        return meta
    for prefix, dest in src.include:
        if text.startswith(prefix):
            out = dest + text[len(prefix):]
            if any(out.startswith(x) for x in src.exclude) or "/__pycache__/" in f"/{out}" or out.endswith(".pyc"):
                return None
            return out
    return None


def read_archive(archive: Path, src: PipSource) -> dict[str, bytes]:
    """Return ``{tree-relative path: bytes}`` for included members; checks every member's path."""
    files: dict[str, bytes] = {}
    try:
        if archive.name.endswith(".whl") or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise CorruptArchive(f"{archive.name}: member {bad!r} fails its CRC check")
                for info in zf.infolist():
                    rel = _safe_member(info.filename, archive)
                    if info.is_dir():
                        continue
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise CorruptArchive(f"{archive.name}: refusing symlink member {info.filename!r}")
                    out = _select(rel, src)
                    if out is not None:
                        files[out] = zf.read(info)
        else:
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()
                tops = {PurePosixPath(m.name).parts[0] for m in members if m.name}
                strip = len(tops) == 1
                for member in members:
                    rel = _safe_member(member.name, archive)
                    if member.issym() or member.islnk():
                        raise CorruptArchive(f"{archive.name}: refusing link member {member.name!r} -> {member.linkname!r}")
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise CorruptArchive(f"{archive.name}: refusing special member {member.name!r}")
                    if strip:
                        if len(rel.parts) < 2:
                            continue
                        rel = PurePosixPath(*rel.parts[1:])
                    out = _select(rel, src)
                    if out is not None:
                        fh = tf.extractfile(member)
                        assert fh is not None
                        files[out] = fh.read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        if isinstance(err, PatchkitError):
            raise
        raise CorruptArchive(f"{archive.name}: not a readable archive ({err})") from err
    if not files:
        wanted = ", ".join(prefix for prefix, _ in src.include)
        raise CorruptArchive(f"{archive.name}: contains none of the expected paths ({wanted})")
    return files
