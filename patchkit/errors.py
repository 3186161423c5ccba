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
70    internal error (a bug in patchkit; run with --verbose for the traceback)
====  =======================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_DRIFT = 4
EXIT_INTERNAL = 70


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
