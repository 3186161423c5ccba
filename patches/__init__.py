"""Patch sets, one module per model.  ``get(model)`` returns its PatchSet."""

from __future__ import annotations

import importlib
import os

from patchkit.errors import UnknownModel
from patchkit.patchset import PatchSet

#: model name -> module in this package that defines PATCHSET
MODELS: dict[str, str] = {
    "chronos2": "chronos2",
    "toto": "toto",
    "kronos": "kronos",
}


#: Extra patch sets outside this package, as ``module:ATTRIBUTE`` entries separated by commas (each
#: attribute a PatchSet).  Lets a project keep its own model's patch set in its own code, and lets tests
#: drive the verify subprocesses with a fixture model.
EXTRA_ENV = "PATCHKIT_EXTRA_PATCHSETS"


def _extra() -> dict[str, PatchSet]:
    found: dict[str, PatchSet] = {}
    for entry in filter(None, (x.strip() for x in os.environ.get(EXTRA_ENV, "").split(","))):
        module, _, attr = entry.partition(":")
        try:
            ps = getattr(importlib.import_module(module), attr or "PATCHSET")
        except (ImportError, AttributeError) as err:
            raise UnknownModel(f"{EXTRA_ENV} names {entry!r}, which does not import ({err})") from err
        found[ps.model] = ps
    return found


def names() -> list[str]:
    return sorted(MODELS)


def get(model: str) -> PatchSet:
    if model not in MODELS:
        extra = _extra()
        if model in extra:
            return extra[model]
        raise UnknownModel(f"unknown model {model!r}; known models: {', '.join(names() + sorted(extra))}")
    module = importlib.import_module(f"{__name__}.{MODELS[model]}")
    return module.PATCHSET
