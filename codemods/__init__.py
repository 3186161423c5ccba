"""patchkit's codemods: one LibCST transform per torch.compile hazard.

``REGISTRY`` maps each stable codemod name to its class.  Names are part of the
public interface (patch sets and reports use them) and are never reused.
"""

from __future__ import annotations

from .base import CodemodOptionError, CodemodResult, PatchkitCodemod, Site, run_codemod
from .isnan_guard import IsnanGuard

ALL: tuple[type[PatchkitCodemod], ...] = (IsnanGuard,)

REGISTRY: dict[str, type[PatchkitCodemod]] = {cls.NAME: cls for cls in ALL}

__all__ = [
    "ALL",
    "REGISTRY",
    "CodemodOptionError",
    "CodemodResult",
    "PatchkitCodemod",
    "Site",
    "run_codemod",
]
