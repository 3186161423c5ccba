"""Managed compile caches for ``torch.compile`` users: ``patchkit cache warm|info|clear``.

``warm`` runs the patched model's traffic profile compiled with inductor in a
subprocess whose inductor cache starts empty, then saves what that run compiled
(inductor's FX-graph cache and AOTAutograd's cache) as one portable artifact
with ``torch.compiler.save_cache_artifacts``.  A service calls
``patchkit.runtime.load_compile_cache(path)`` (which runs
``torch.compiler.load_cache_artifacts``) before its first compiled call, so
inductor finds every graph of the profile in its cache.  Dynamo still traces
in the new process, and on a CPU the C++ kernels are compiled again: torch
2.13's artifact carries inductor's generated code, not compiled C++ (on a GPU
the Triton binaries ride in the FX-graph entries).

An artifact is keyed by model, size, device, torch version and patch-set hash:
``$PATCHKIT_CACHE/compile/MODEL-SIZE-DEVICE-torchVERSION-PATCHHASH.bin``, with
a JSON record beside it.  Loading one from another torch or patch set is
refused (exit 2): its graphs were compiled from other code.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput, json_error
from .patchset import PatchSet
from .provenance import ArtifactKind, Provenance
from .workspace import Workspace, atomic_write_bytes, atomic_write_text

RECORD_FORMAT = 1


class CacheMismatch(BadInput):
    """The artifact was saved by another torch version or from another patch set."""


#: how a cache artifact's refusals read (patchkit.provenance)
CACHE_ARTIFACT = ArtifactKind("saved", "by", "re-run `patchkit cache warm {model}`", CacheMismatch)


def inductor_cache_env(folder: str | Path) -> dict[str, str]:
    """Environment for a subprocess whose inductor FX-graph and AOTAutograd caches live in ``folder``."""
    return {"TORCHINDUCTOR_CACHE_DIR": str(folder), "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
            "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}


def cache_dir() -> Path:
    base = os.environ.get("PATCHKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "patchkit")
    return Path(base) / "compile"


def _safe(version: str) -> str:
    return version.replace("+", "_").replace("/", "_")


def artifact_path(model: str, size: str, device: str, torch_version: str, patch_hash: str) -> Path:
    return cache_dir() / f"{model}-{size}-{device.split(':')[0]}-torch{_safe(torch_version)}-{patch_hash}.bin"


@dataclass(frozen=True)
class CacheEntry:
    path: str
    model: str
    size: str
    device: str
    torch: str
    patch_hash: str
    bytes: int
    created: str
    calls: int
    seconds: float
    artifacts: dict[str, int]
    current: bool | None = None  # matches this torch and the workspace's patch set (None: no workspace lock)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def warm(ws: Workspace, ps: PatchSet, *, size: str = "tiny", weights: str | None = None, device: str = "cpu",
         calls: int = 24, seed: int = 0, progress=lambda msg: None) -> CacheEntry:
    """Compile the traffic profile from an empty inductor cache and save what it compiled as one artifact."""
    import torch

    from .apply import require_applied
    from .provenance import patch_hash
    from .verify.traffic_report import run_traffic

    if ps.traffic is None:
        raise BadInput(f"{ps.model}: its patch set declares no traffic profile to warm the cache with")
    phash = patch_hash(require_applied(ws, ps))
    dest = artifact_path(ps.model, size, device, torch.__version__, phash)
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="patchkit-warm-") as tmp:
        saved = Path(tmp) / "artifact.bin"
        env = inductor_cache_env(Path(tmp) / "inductor")
        progress(f"{ps.model} ({size}, {device}): {calls} traffic calls compiled from an empty inductor cache")
        data = run_traffic(ps, ws.patched(ps.model).resolve(), "patched", "compiled", size=size, calls=calls,
                           seed=seed, weights=weights, device=device, timeout=4 * 3600, extra_env=env,
                           extra_args=("--cache-save", str(saved))).data
        errors = data["passes"]["compiled"]["errors"]
        if errors:
            raise BadInput(f"warming {ps.model}: call {errors[0]['call']} raised {errors[0]['error']}; nothing saved")
        if not saved.exists():
            raise BadInput(f"warming {ps.model}: torch saved no cache artifacts (nothing was compiled)")
        entry = CacheEntry(str(dest), ps.model, size, device, torch.__version__, phash, saved.stat().st_size,
                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), calls,
                           round(time.perf_counter() - t0, 2), data.get("cache_artifacts", {}))
        atomic_write_bytes(dest, saved.read_bytes())
        atomic_write_text(_record_path(dest), json.dumps({"format": RECORD_FORMAT, **entry.to_json()}, indent=2) + "\n")
    return entry


def entries(ws: Workspace | None = None) -> list[CacheEntry]:
    """Every saved artifact, newest first; ``current`` when a workspace's lock says which patch set is current."""
    from .provenance import patch_hash

    out = []
    for rec_path in sorted(cache_dir().glob("*.json")):
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if rec.get("format") != RECORD_FORMAT or not Path(rec.get("path", "")).is_file():
            continue
        current = None
        lock = ws.read_lock(rec["model"]) if ws else None
        if lock and "patched" in lock:
            current = Provenance.of(rec).usable(patch_hash(lock))
        fields = {k: rec[k] for k in CacheEntry.__dataclass_fields__ if k in rec and k != "current"}
        out.append(CacheEntry(**fields, current=current))
    return sorted(out, key=lambda e: e.created, reverse=True)


def clear(model: str | None = None) -> list[str]:
    """Remove the saved artifacts (of one model); returns the paths removed."""
    removed = []
    for path in sorted(cache_dir().glob("*.bin")):
        if model is None or path.name.startswith(f"{model}-"):
            path.unlink(missing_ok=True)
            _record_path(path).unlink(missing_ok=True)
            removed.append(str(path))
    return removed


def load(path: str | Path, *, patch_hash: str | None = None) -> dict[str, Any]:
    """Load a saved artifact into this process's compile caches (before the first compiled call).

    Refuses an artifact from another torch version, or from another patch set when ``patch_hash`` is given.
    Returns the artifact's record.
    """
    import torch

    path = Path(path)
    rec_path = _record_path(path)
    if not path.is_file() or not rec_path.is_file():
        raise BadInput(f"{str(path)!r}: no such compile-cache artifact (with its .json record beside it)")
    try:
        rec = json.loads(rec_path.read_text())
    except json.JSONDecodeError as err:
        raise BadInput(f"{rec_path}: unreadable record ({json_error(err)})") from None
    Provenance.of(rec).check(path, CACHE_ARTIFACT, patch_hash=patch_hash)
    try:
        torch.compiler.load_cache_artifacts(path.read_bytes())
    except Exception as err:  # noqa: BLE001 - a damaged artifact, whatever torch raises about it
        raise BadInput(f"{path}: not a loadable cache artifact ({type(err).__name__}: {err})") from None
    return rec
