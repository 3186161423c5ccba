"""What an application imports at run time: ``assert_patched`` and a guarded ``compile``.

``assert_patched("toto")`` raises in the user's own process when the imported
(or importable) ``toto`` package is not a patchkit build.

``compile(model_or_fn, **torch_compile_kwargs)`` wraps ``torch.compile`` with
what forecasting services otherwise write by hand:

* **fallback**: when compiling or running the compiled code fails, the call is
  run eagerly.  If eager succeeds, the failure was the compiler's: one warning
  names the cause and every later call runs eagerly.  If eager raises too, the
  error is the model's own and propagates unchanged (nothing falls back).
  ``KeyboardInterrupt`` and ``SystemExit`` always propagate;
* **recompile limit**: Dynamo's silent fall to eager becomes a warning naming
  the function and the last guard that failed (``strict=True``: an error);
* **counters**: calls, graphs, recompiles, fallbacks and limit hits, for the
  application's own logs and metrics;
* **strict mode**: after ``warmup`` calls, ``strict=True`` runs under
  ``torch.compiler.set_stance("fail_on_recompile")``, so a new recompile raises.

``compile_model(obj, **torch_compile_kwargs)`` is each model's one compile
recipe: it takes the upstream's own object (``Chronos2Pipeline`` or
``Chronos2Model``; ``TotoForecaster`` or ``TotoBackbone``; ``KronosPredictor``
or ``Kronos``) and compiles, with ``compile``'s guard around each, the units
the patch set names as compiled (``PatchSet.compile_recipe``): the ones whose
graphs ``verify --traffic`` holds to a budget, served the same way.

Zero warm-up: ``load_package(path)`` loads a ``patchkit export`` package (no
Dynamo, no compiling) and ``.entry_point()`` builds the upstream's own entry
point over it; ``load_compile_cache(path)`` loads a ``patchkit cache warm``
artifact before the first ``torch.compile`` call.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ["assert_patched", "compile", "compile_model", "compiled_units", "GuardedCompile", "CompileCounters", "NotPatched", "CompileFailure",
           "RecompileLimitHit"]


class NotPatched(ImportError):
    """The imported package is the upstream (or an unknown build), not patchkit's patched one."""


class CompileFailure(RuntimeError):
    """strict mode: compiling or running the compiled code failed, or a recompile happened after warm-up."""


class RecompileLimitHit(CompileFailure):
    """strict mode: Dynamo hit its recompile limit for the guarded function."""


class RecompileLimitWarning(RuntimeWarning):
    pass


class CompileFallbackWarning(RuntimeWarning):
    pass


# -- assert_patched -------------------------------------------------------------------------------
def assert_patched(model: str, *, patch_hash: str | None = None) -> dict[str, Any]:
    """Raise ``NotPatched`` unless ``model``'s package in this process is a patchkit build.

    Looks at the module already imported (``sys.modules``) or, if none, the one
    ``import`` would find, and reads the provenance record ``patchkit build``
    put inside it.  ``patch_hash``: also require that exact patch set.  Returns
    the provenance record.
    """
    import importlib.util

    from . import patches
    from .distribute import PROVENANCE, import_names

    ps = patches.get(model)
    name = import_names(ps)[0]
    mod = sys.modules.get(name)
    if mod is not None and getattr(mod, "__path__", None):
        where = Path(list(mod.__path__)[0])
    else:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise NotPatched(f"{model}: no importable package {name!r}; run `patchkit install {model}`")
        where = Path(list(spec.submodule_search_locations)[0])
    record = where / PROVENANCE
    if not record.is_file():
        raise NotPatched(f"{model}: {name!r} comes from {where}, which is not a patchkit build (upstream?); "
                         f"run `patchkit install {model}`")
    data = json.loads(record.read_text())
    if patch_hash is not None and data.get("patch_hash") != patch_hash:
        raise NotPatched(f"{model}: {name!r} at {where} was built from patch set {data.get('patch_hash')}, "
                         f"not {patch_hash} (stale); run `patchkit install {model}`")
    return data


# -- compile guard --------------------------------------------------------------------------------
@dataclass
class CompileCounters:
    calls: int = 0
    #: graphs Dynamo handed to the backend (graph breaks and recompiles each add one)
    graphs: int = 0
    #: graphs compiled during a call after the first one (a guard failed: new shapes, new flags)
    recompiles: int = 0
    #: calls that ran eagerly because the compiled path failed (1 at the switch, then every call)
    fallbacks: int = 0
    limit_hits: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _LimitWatcher(logging.Handler):
    """Catches Dynamo's 'hit config.recompile_limit' warning records (they name the code object)."""

    _lock = threading.Lock()
    _installed: _LimitWatcher | None = None

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[str, str, int, str]] = []  # (co_name, file, firstlineno, reason)

    def emit(self, record: logging.LogRecord) -> None:
        msg = str(record.msg)
        if "hit config." not in msg or not isinstance(record.args, tuple) or len(record.args) < 4:
            return
        func, reason = str(record.args[2]), str(record.args[3])
        # func is "'name' (file:line)"
        try:
            name = func.split("'")[1]
            file, _, line = func.rsplit("(", 1)[1].rstrip(")").rpartition(":")
            self.records.append((name, file, int(line), reason))
        except (IndexError, ValueError):
            self.records.append((func, "", 0, reason))

    @classmethod
    def get(cls) -> _LimitWatcher:
        with cls._lock:
            if cls._installed is None:
                cls._installed = cls()
                logging.getLogger("torch._dynamo.convert_frame").addHandler(cls._installed)
            return cls._installed


def _describe(err: BaseException) -> str:
    """``Outer: first line`` plus the root cause (Dynamo wraps a backend's exception)."""
    def one(e: BaseException) -> str:
        text = str(e).strip()
        return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__

    root, seen = err, {id(err)}
    while True:
        inner = getattr(root, "inner_exception", None) or root.__cause__  # BackendCompilerFailed keeps it aside
        if not isinstance(inner, BaseException) or id(inner) in seen:
            break
        root = inner
        seen.add(id(root))
    return one(err) if root is err else f"{one(err)}; caused by {one(root)}"


def _code_of(target: Any):
    fn = getattr(target, "forward", target)
    fn = getattr(fn, "__func__", fn)
    return getattr(fn, "__code__", None)


class GuardedCompile:
    """A compiled callable with eager fallback, loud recompile limits and counters (see the module doc)."""

    def __init__(self, target: Callable[..., Any], *, strict: bool = False, warmup: int | None = None,
                 name: str | None = None, logger: logging.Logger | None = None, **compile_kwargs: Any) -> None:
        import torch

        self.target = target
        self.strict = strict
        self.warmup = warmup
        self.name = name or getattr(target, "__qualname__", None) or type(target).__name__
        self.counters = CompileCounters()
        self.fallen_back: BaseException | None = None
        self._log = logger or logging.getLogger("patchkit.runtime")
        self._code = _code_of(target)
        self._watch = _LimitWatcher.get()
        backend = compile_kwargs.pop("backend", "inductor")
        mode = compile_kwargs.pop("mode", None)
        options = compile_kwargs.pop("options", None)
        dynamic = compile_kwargs.get("dynamic")
        if isinstance(backend, str) and backend == "inductor":
            inner = torch._TorchCompileInductorWrapper(mode or "default", options, dynamic)
        elif isinstance(backend, str):
            from torch._dynamo.backends.registry import lookup_backend

            if mode or options:
                raise ValueError("mode/options apply to the inductor backend only")
            inner = lookup_backend(backend)
        else:
            inner = backend
        counters = self.counters

        class _Counting:
            def __call__(self, gm, example_inputs):
                counters.graphs += 1
                return inner(gm, example_inputs)

            def __getattr__(self, key):
                return getattr(inner, key)

        self.compiled = torch.compile(target, backend=_Counting(), **compile_kwargs)
        functools.update_wrapper(self, target, updated=())
        # what torch.compile's own wrappers carry: the patched trees' helpers ask it to tell a compiled step
        # (whose calls they shape for one graph) from an eager one
        self._torchdynamo_orig_callable = target

    def _check_limit(self, seen: int) -> None:
        new = self._watch.records[seen:]
        for name, file, line, reason in new:
            code = self._code
            if code is not None and (name != code.co_name or (file and file != code.co_filename)):
                continue
            self.counters.limit_hits += 1
            msg = (f"patchkit.runtime.compile: {self.name} hit torch._dynamo's recompile limit; Dynamo now runs it "
                   f"eagerly ({name} at {file}:{line}; last guard that failed: {reason})")
            if self.strict:
                raise RecompileLimitHit(msg)
            warnings.warn(msg, RecompileLimitWarning, stacklevel=3)
            self._log.warning(msg)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        self.counters.calls += 1
        if self.fallen_back is not None:
            self.counters.fallbacks += 1
            return self.target(*args, **kwargs)
        first = self.counters.calls == 1
        graphs_before, seen = self.counters.graphs, len(self._watch.records)
        strict_now = self.strict and self.warmup is not None and self.counters.calls > self.warmup
        compiled_err: Exception | None = None
        try:
            if strict_now:
                with torch.compiler.set_stance("fail_on_recompile"):
                    out = self.compiled(*args, **kwargs)
            else:
                out = self.compiled(*args, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - sorted out below: the model's own error, or the compiler's
            compiled_err = err
        self._count(first, graphs_before)
        self._check_limit(seen)
        if compiled_err is None:
            return out
        # the same call eagerly: if it raises, the error is the model's own and propagates unchanged
        out = self.target(*args, **kwargs)
        if self.strict:
            raise CompileFailure(f"patchkit.runtime.compile: {self.name}: the compiled call failed where eager "
                                 f"succeeds: {type(compiled_err).__name__}: {compiled_err}") from compiled_err
        self.fallen_back = compiled_err
        self.counters.fallbacks += 1
        msg = (f"patchkit.runtime.compile: {self.name}: compiling or running the compiled code failed "
               f"({_describe(compiled_err)}); running eagerly from now on")
        warnings.warn(msg, CompileFallbackWarning, stacklevel=2)
        self._log.warning(msg)
        return out

    def _count(self, first: bool, graphs_before: int) -> None:
        if not first and self.counters.graphs > graphs_before:
            self.counters.recompiles += self.counters.graphs - graphs_before

    def __getattr__(self, key: str) -> Any:
        # attribute access (model.config, model.device, ...) goes to the wrapped module
        if key in ("target", "compiled"):
            raise AttributeError(key)
        return getattr(self.target, key)


def compile(target: Callable[..., Any], *, strict: bool = False, warmup: int | None = None, name: str | None = None,
            **torch_compile_kwargs: Any) -> GuardedCompile:
    """``torch.compile(target, **torch_compile_kwargs)`` with fallback, loud recompile limits and counters.

    ``strict=True``: a recompile-limit hit or a compiler failure raises instead of
    warning, and after ``warmup`` calls any recompile raises (``fail_on_recompile``).
    """
    return GuardedCompile(target, strict=strict, warmup=warmup, name=name, **torch_compile_kwargs)


def _recipe_for(obj: Any):
    from . import patches
    from .patchset import is_a, resolve

    for model in patches.names():
        ps = patches.get(model)
        if ps.compile_recipe and any(is_a(obj, t) for t in ps.compile_targets):
            return resolve(ps.compile_recipe)
    takes = sorted(t for m in patches.names() for t in patches.get(m).compile_targets)
    raise TypeError(f"compile_model takes an upstream object ({', '.join(takes)}), not {type(obj).__name__}")


def compile_model(obj: Any, *, strict: bool = False, warmup: int | None = None, **torch_compile_kwargs: Any) -> Any:
    """Compile what the patch set says is ``obj``'s compiled unit, each with ``compile``'s guard around it.

    ``obj`` is the upstream's own object; a pipeline, forecaster or predictor is compiled in place and returned,
    a bare model comes back as the callable to use in its place.  ``torch_compile_kwargs`` go to
    ``torch.compile`` (``mode=``, ``backend=``, ``dynamic=``...); ``strict``/``warmup`` as for ``compile``.
    ``compiled_units(result)`` gives the guarded units, with their counters.

    >>> pipeline = patchkit.runtime.compile_model(Chronos2Pipeline.from_pretrained("amazon/chronos-2"))
    >>> forecasts = pipeline.predict(inputs, prediction_length=64)
    """
    recipe = _recipe_for(obj)
    units: dict[str, GuardedCompile] = {}

    def compile_fn(fn: Callable[..., Any], name: str | None = None) -> GuardedCompile:
        guarded = GuardedCompile(fn, strict=strict, warmup=warmup, name=name, **dict(torch_compile_kwargs))
        units[guarded.name] = guarded
        return guarded

    out = recipe(obj, compile_fn)
    object.__setattr__(out, "_patchkit_compiled_units", units)  # past nn.Module's __setattr__: a plain dict
    return out


def compiled_units(obj: Any) -> dict[str, GuardedCompile]:
    """The units ``compile_model`` compiled for ``obj`` (its return value), by name, with their counters."""
    units = getattr(obj, "__dict__", {}).get("_patchkit_compiled_units")
    if units is None:
        raise ValueError(f"{type(obj).__name__} was not compiled by patchkit.runtime.compile_model")
    return units


def load_package(path, *, patch_hash: str | None = None, model: str | None = None):
    """Load a ``patchkit export`` package: see ``patchkit.aot.load_package``.

    ``load_package("chronos2.pt2").entry_point()`` is an upstream ``Chronos2Pipeline`` whose model runs the
    package's ahead-of-time programs.
    """
    from .aot import load_package as _load

    return _load(path, patch_hash=patch_hash, model=model)


def load_compile_cache(path, *, patch_hash: str | None = None) -> dict:
    """Load a ``patchkit cache warm`` artifact into this process before the first ``torch.compile`` call.

    Refuses (``BadInput``) an artifact saved by another torch version, or from another patch set when
    ``patch_hash`` is given.  Returns the artifact's record.
    """
    from .compile_cache import load

    return load(path, patch_hash=patch_hash)
