"""patchkit's error hierarchy.  Only the CLI turns these into exit codes.

Exit codes (also in the README):

====  =======================================================================
0     success
1     verification failed (breaks or recompiles remain, forecasts drifted,
      ``apply --check`` found the tree out of date, upstream tests failed)
2     bad input (unknown model or version, corrupt or unsafe archive, a
      vendored file edited by hand, bad options)
3     environment (no network, pip or git missing, a needed package absent)
4     upstream drift (a codemod no longer matches the upstream it must patch)
70    internal error (a bug in patchkit; the traceback is in the log file the
      message names, and on stderr with ``patchkit -v``)
130   interrupted (Ctrl-C or SIGTERM); nothing half-written is left
====  =======================================================================

Subprocess runners (``verify/*_runner.py``) report a failure as one typed line
(see ``failure_line``); the parent re-raises it as ``SubprocessFailed`` with the
runner's own exit code and keeps the full stderr in a log file.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_DRIFT = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

#: every exit code patchkit returns, with its meaning (the README's exit-code table lists the same)
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_VERIFY_FAILED: "verification failed",
    EXIT_BAD_INPUT: "bad input",
    EXIT_ENVIRONMENT: "environment",
    EXIT_DRIFT: "upstream drift",
    EXIT_INTERNAL: "internal error",
    EXIT_INTERRUPTED: "interrupted",
}


class PatchkitError(Exception):
    """Base class; ``exit_code`` says which class of failure it is."""

    exit_code = EXIT_INTERNAL


class BadInput(PatchkitError):
    exit_code = EXIT_BAD_INPUT


class UnknownModel(BadInput):
    pass


class UnknownVersion(BadInput):
    pass


class CorruptArchive(BadInput):
    pass


class LockMismatch(BadInput):
    """A vendored file or archive does not match what the lock recorded."""


class NotVendored(BadInput):
    pass


class EnvironmentProblem(PatchkitError):
    exit_code = EXIT_ENVIRONMENT


class NoNetwork(EnvironmentProblem):
    pass


class MissingTool(EnvironmentProblem):
    pass


class UpstreamDrift(PatchkitError):
    """A patch-set step found nothing to rewrite and no sign of an upstream fix."""

    exit_code = EXIT_DRIFT


class VerificationFailed(PatchkitError):
    exit_code = EXIT_VERIFY_FAILED


class MissingCompiler(MissingTool):
    """No C++ compiler for inductor (``$CXX`` or ``g++``)."""


class FileSystemProblem(EnvironmentProblem):
    """A file or folder patchkit must write or read cannot be (permissions, read-only, disk full)."""


class Interrupted(PatchkitError):
    """Ctrl-C or SIGTERM while a command ran."""

    exit_code = EXIT_INTERRUPTED


class SubprocessFailed(PatchkitError):
    """A runner subprocess failed; ``exit_code`` is the one the runner reported."""

    def __init__(self, message: str, exit_code: int = EXIT_INTERNAL, kind: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.kind = kind


# -- one error line, from any exception -----------------------------------------
def one_line(text: str, limit: int = 400) -> str:
    first = next((x.strip() for x in str(text).splitlines() if x.strip()), "")
    return first[:limit] + ("..." if len(first) > limit else "")


def json_error(err: Exception) -> str:
    """``Expecting value at line 1, column 1`` for a JSON decode error (its own text otherwise)."""
    if isinstance(err, json.JSONDecodeError):  # "Unterminated string starting at" has its own "at"
        return f"{err.msg}{'' if err.msg.endswith(' at') else ' at'} line {err.lineno}, column {err.colno}"
    return one_line(str(err)) or type(err).__name__


def from_os_error(err: OSError) -> FileSystemProblem:
    """A ``FileSystemProblem`` naming the path and the reason (``Permission denied``, ``Read-only file system``)."""
    what = err.strerror or errno.errorcode.get(err.errno or 0, "") or type(err).__name__
    where = f" {err.filename}" if err.filename else ""
    also = f" -> {err.filename2}" if getattr(err, "filename2", None) else ""
    return FileSystemProblem(f"cannot use{where}{also}: {what}")


#: exception texts that are the environment's fault, not patchkit's (torch's own wording)
_ENVIRONMENT_SIGNS = ("InvalidCxxCompiler", "No working C++ compiler", "CppCompileError")


def classify(err: BaseException) -> PatchkitError | None:
    """The patchkit error an exception from user input or the environment stands for; ``None`` for a bug."""
    if isinstance(err, PatchkitError):
        return err
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                                                  errno.EDQUOT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        return from_os_error(err)
    text = f"{type(err).__name__}: {err}"
    if any(sign in text for sign in _ENVIRONMENT_SIGNS):
        return MissingCompiler(f"inductor cannot compile: {one_line(text)} (install a C++ compiler or set $CXX)")
    return None


# -- subprocess failures --------------------------------------------------------
FAILURE_MARK = "@@patchkit-failure "


def failure_line(err: BaseException, context: str = "") -> str:
    """The marker line a runner prints last on stderr: the failure's class, one-line message and exit code."""
    known = classify(err)
    if isinstance(err, KeyboardInterrupt):
        payload = {"kind": "KeyboardInterrupt", "message": "interrupted", "exit_code": EXIT_INTERRUPTED}
    elif known is not None:
        payload = {"kind": type(known).__name__, "message": one_line(str(known)), "exit_code": known.exit_code}
    else:
        message = one_line(f"{type(err).__name__}: {err}")
        payload = {"kind": type(err).__name__, "message": f"{context}{message}", "exit_code": EXIT_INTERNAL}
    return FAILURE_MARK + json.dumps(payload)


def parse_failure(stderr: str) -> dict | None:
    for line in reversed(stderr.splitlines()):
        if line.startswith(FAILURE_MARK):
            try:
                payload = json.loads(line[len(FAILURE_MARK):])
            except ValueError:
                return None
            return payload if isinstance(payload, dict) else None
    return None


def log_dir() -> Path:
    """Where patchkit keeps the full stderr of failed runs and internal tracebacks."""
    base = os.environ.get("PATCHKIT_LOG_DIR") or Path(os.environ.get("PATCHKIT_CACHE") or
                                                      Path.home() / ".cache" / "patchkit") / "logs"
    return Path(base)


def write_log(label: str, text: str) -> Path | None:
    """Keep ``text`` in a new log file (``None`` when even that cannot be written)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:60]
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{os.getpid()}.log"
        path.write_text(text)
        return path
    except OSError:
        return None


def subprocess_failure(what: str, returncode: int, stderr: str, label: str) -> SubprocessFailed:
    """The error for a runner that exited ``returncode``: its own typed line, or a short tail when it printed none;
    the whole stderr goes to a log file that the message names."""
    log = write_log(label, stderr)
    where = f" (log: {log})" if log else ""
    payload = parse_failure(stderr)
    if payload is not None:
        code = payload.get("exit_code")
        code = code if isinstance(code, int) and code in EXIT_CODES else EXIT_INTERNAL
        return SubprocessFailed(f"{what}: {payload.get('message', '')}{where}", code, str(payload.get("kind", "")))
    if returncode in (-2, -15, EXIT_INTERRUPTED):  # SIGINT, SIGTERM: the run was stopped, not broken
        return SubprocessFailed(f"{what}: interrupted{where}", EXIT_INTERRUPTED, "signal")
    if returncode < 0:
        return SubprocessFailed(f"{what}: killed by signal {-returncode}{where}", EXIT_INTERNAL, "")
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    return SubprocessFailed(f"{what}: exit {returncode}: {one_line(lines[-1]) if lines else 'no output'}{where}",
                            EXIT_INTERNAL, "")


class OutsideRange(ValueError):
    """A call whose shape is outside the package's exported ranges; the message names the range.

    Raised by the runtimes before any program runs (never a crash in compiled code); ``verify --aot``
    counts these calls as refused, apart from errors.  A ``ValueError``, not a ``PatchkitError``: it is the
    answer to one call inside a user's process, public as ``patchkit.aot.OutsideRange``."""
