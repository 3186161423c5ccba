"""patchkit's codemods: one LibCST transform per torch.compile hazard.

``REGISTRY`` maps each stable codemod name to its class.  Names are part of the
public interface (patch sets and reports use them) and are never reused.
"""

from __future__ import annotations

from .base import (
    HELPERS_MODULE,
    CodemodOptionError,
    CodemodResult,
    PatchkitCodemod,
    Site,
    helpers_source,
    run_codemod,
)
from .branch_free_pad import BranchFreePad
from .chunked_reduction import ChunkedReduction
from .clone_step_output import CloneStepOutput
from .contiguous_step_inputs import ContiguousStepInputs
from .cudagraph_step import CudagraphStep
from .decode_prefix_slice import DecodePrefixSlice
from .dynamic_step_inputs import DynamicStepInputs
from .eager_when import EagerWhen
from .isnan_guard import IsnanGuard
from .item_scalar import ItemScalar
from .kv_cache_callsites import KvCacheCallsites
from .mark_growing_dynamic import MarkGrowingDynamic
from .offset_causal_mask import OffsetCausalMask
from .pad_single_row import PadSingleRow
from .rename_imports import RenameImports
from .rope_static_cache import RopeStaticCache
from .static_kv_cache import StaticKvCache
from .step_cache import StepCache

ALL: tuple[type[PatchkitCodemod], ...] = (
    # validation guards and shape branches
    IsnanGuard,
    BranchFreePad,
    ChunkedReduction,
    # KV caches and their call sites
    ItemScalar,
    StaticKvCache,
    KvCacheCallsites,
    OffsetCausalMask,
    DecodePrefixSlice,
    MarkGrowingDynamic,
    # rotary caches and CUDA-graph step discipline
    RopeStaticCache,
    CudagraphStep,
    CloneStepOutput,
    ContiguousStepInputs,
    DynamicStepInputs,
    PadSingleRow,
    EagerWhen,
    # decode-loop work
    StepCache,
    # shipping a patched tree
    RenameImports,
)

REGISTRY: dict[str, type[PatchkitCodemod]] = {cls.NAME: cls for cls in ALL}

__all__ = [
    "ALL",
    "HELPERS_MODULE",
    "REGISTRY",
    "CodemodOptionError",
    "CodemodResult",
    "PatchkitCodemod",
    "Site",
    "helpers_source",
    "run_codemod",
]
