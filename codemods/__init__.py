"""patchkit's codemods: one LibCST transform per torch.compile hazard.

``REGISTRY`` maps each stable codemod name to its class.  Names are part of the
public interface (patch sets and reports use them) and are never reused.
"""

from __future__ import annotations

from .base import CodemodOptionError, CodemodResult, PatchkitCodemod, Site, run_codemod
from .contiguous_step_inputs import ContiguousStepInputs
from .cudagraph_step import CudagraphStep
from .isnan_guard import IsnanGuard
from .rope_static_cache import RopeStaticCache

ALL: tuple[type[PatchkitCodemod], ...] = (IsnanGuard, RopeStaticCache, CudagraphStep, ContiguousStepInputs)

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
