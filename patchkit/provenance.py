"""Where an artifact comes from, and the one check that it may be used in this process.

A ``.pt2`` package (``patchkit export``) and a compile-cache artifact (``patchkit cache warm``) are only valid
for the torch release that built them and the patch set they were built from: compiled code from another torch
does not load or silently differs, and a stale patch set means other source.  Each artifact keeps a record with
``model``, ``torch`` and ``patch_hash`` (and ``device``); ``Provenance.of(record).check(...)`` is the single
place those are compared with this process, so every kind of artifact refuses in the same way, naming the
command that makes a current one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput, EnvironmentProblem, NotVendored


@dataclass(frozen=True)
class ArtifactKind:
    """How refusals of one kind of artifact read: ``made`` ("exported", "saved"), the preposition before the
    torch release (``with``/``by``), the command that makes a current one (``{model}`` is filled in), and the
    ``BadInput`` subclass raised."""

    made: str
    torch_word: str
    fix: str
    error: type[BadInput]


@dataclass(frozen=True)
class Provenance:
    """The model, torch release, patch set and device an artifact was made for."""

    model: str | None
    torch: str | None
    patch_hash: str | None
    device: str = "cpu"

    @classmethod
    def of(cls, record: dict[str, Any]) -> Provenance:
        return cls(record.get("model"), record.get("torch"), record.get("patch_hash"),
                   str(record.get("device") or "cpu"))

    def usable(self, patch_hash: str | None) -> bool:
        """Whether ``check`` would accept it for ``patch_hash``, leaving the device aside (a listing's question)."""
        import torch

        return self.torch == torch.__version__ and (patch_hash is None or self.patch_hash == patch_hash)

    def check(self, path: str | Path, kind: ArtifactKind, *, patch_hash: str | None = None,
              model: str | None = None) -> None:
        """Refuse (``kind.error``) an artifact of another model, another torch release or, when ``patch_hash`` is
        given, another patch set; ``EnvironmentProblem`` for a CUDA artifact in a process that sees no GPU."""
        import torch

        fix = kind.fix.format(model=self.model)
        if model and self.model != model:
            raise kind.error(f"{path}: {kind.made} for {self.model!r}, not {model!r}; {kind.fix.format(model=model)}")
        if self.torch != torch.__version__:
            raise kind.error(f"{path}: {kind.made} {kind.torch_word} torch {self.torch}, this process runs torch "
                             f"{torch.__version__}; {fix}")
        if patch_hash is not None and self.patch_hash != patch_hash:
            raise kind.error(f"{path}: {kind.made} from patch set {self.patch_hash}, the current patched "
                             f"{self.model} is {patch_hash}; {fix}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise EnvironmentProblem(f"{path}: {kind.made} for CUDA, and torch sees no CUDA device here")


def patch_hash(lock: dict[str, Any]) -> str:
    """12 hex digits naming the patched tree: upstream identity plus every patched file's hash."""
    if "patched" not in lock:
        raise NotVendored(f"{lock.get('model')} is vendored but not patched; run `patchkit apply {lock.get('model')}`")
    ident = {"model": lock["model"], "version": lock["version"], "source": lock["source"],
             "files": lock["patched"]["files"]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


__all__ = ["ArtifactKind", "Provenance", "patch_hash"]
