"""Patch sets, one module per model.  ``get(model)`` returns its PatchSet."""

from __future__ import annotations

import importlib

from patchkit.errors import UnknownModel
from patchkit.patchset import PatchSet

#: model name -> module in this package that defines PATCHSET
MODELS: dict[str, str] = {
    "chronos2": "chronos2",
    "toto": "toto",
    "kronos": "kronos",
}


def names() -> list[str]:
    return sorted(MODELS)


def get(model: str) -> PatchSet:
    if model not in MODELS:
        raise UnknownModel(f"unknown model {model!r}; known models: {', '.join(names())}")
    module = importlib.import_module(f"{__name__}.{MODELS[model]}")
    return module.PATCHSET
