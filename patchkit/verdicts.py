"""The last verify verdict of each kind (fixed, traffic) for a patched tree, kept beside the vendored trees.

``verify`` records a verdict for the patched tree it checked (``vendor/.verify/<model>.json``, keyed by kind,
each with the tree's patch hash and the torch release); ``build`` copies the current ones into a wheel's
provenance record, ``install`` refuses a tree whose current verdict failed, and ``status`` shows them.  A verdict
of another patch hash belongs to an older tree and is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .provenance import patch_hash
from .workspace import Workspace, atomic_write_text


def verdict_path(ws: Workspace, model: str) -> Path:
    return ws.vendor_dir / ".verify" / f"{model}.json"


def record_verdict(ws: Workspace, model: str, kind: str, ok: bool, **facts: Any) -> None:
    """Remember the last verify verdict of each kind (fixed, traffic) for the current patched tree."""
    lock = ws.read_lock(model) or {}
    if "patched" not in lock:
        return
    path = verdict_path(ws, model)
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        data = {}
    import torch

    data[kind] = {"ok": bool(ok), "patch_hash": patch_hash(lock), "torch": torch.__version__, **facts}
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def current_verdicts(ws: Workspace, model: str, phash: str) -> dict[str, dict[str, Any]]:
    """The recorded verdicts that belong to the patched tree ``phash`` (older ones are ignored)."""
    path = verdict_path(ws, model)
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        return {}
    return {kind: v for kind, v in data.items() if isinstance(v, dict) and v.get("patch_hash") == phash}
