"""Verify a model: upstream vs patched, each in its own subprocess, then compare.

Per variant: graph breaks (Dynamo's counters, and the ``TORCH_LOGS`` text
attributed to ``file:line`` in the vendored tree), recompiles, graphs, whether
``fullgraph=True`` compiles, and forecasts (eager and inductor-compiled).
Then MAE against the held-back truth: upstream eager vs patched compiled.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from patchkit.errors import EnvironmentProblem, PatchkitError, subprocess_failure
from patchkit.patchset import PatchSet

from . import logs as logparse
from .runner import PHASE_MARK

ALWAYS_LOGS = ("graph_breaks", "recompiles")


@dataclass(frozen=True)
class VariantReport:
    label: str
    tree: str
    graph_breaks: int
    graph_breaks_logged: int
    recompiles: int
    graphs: int
    fullgraph_ok: bool
    fullgraph_error: str
    recompile_limit_hit: bool
    steady_state_ok: bool
    steady_state_error: str
    break_sites: list[dict]
    recompile_sites: list[dict]
    describe: dict
    counter_reasons: dict = field(default_factory=dict)
    log_excerpt: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MaeReport:
    upstream_eager: float
    patched_compiled: float
    abs_diff: float
    max_abs_pred_diff: float
    tolerance: float
    metric: str
    per_series: list[dict]


@dataclass(frozen=True)
class VerifyReport:
    model: str
    torch_version: str
    upstream_version: str
    device: str
    analysis_backend: str
    upstream: VariantReport
    patched: VariantReport
    mae: MaeReport | None
    ok: bool
    failures: list[str]
    size: str = ""
    created: str = ""  # when the report was made, UTC, ISO 8601

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_variant(
    model: str, tree: Path, label: str, *, weights: str | None = None, device: str = "cpu",
    extra_logs: tuple[str, ...] = (), forecast: str = "both", timeout: int = 1800, backend: str = "inductor",
    size: str = "tiny", python: str | Path | None = None, progress: Callable[[str], None] | None = None,
) -> tuple[dict, str]:
    """Run the verify subprocess on ``tree`` with ``python`` (default: this interpreter); return (its JSON,
    its stderr log)."""
    logs = ",".join(dict.fromkeys((*ALWAYS_LOGS, *extra_logs)))
    with tempfile.TemporaryDirectory(prefix=f"patchkit-{label}-") as tmp:
        out = Path(tmp) / "out.json"
        tree = Path(tree).resolve()
        cmd = [str(python or sys.executable), "-m", "patchkit.verify.runner", model, str(tree), str(out), "--device", device,
               "--size", size]
        if weights:
            cmd += ["--weights", weights]
        cmd += ["--backend", backend, "--forecast", forecast]
        proc = run_logged(cmd, model=model, label=label, tree=tree, logs=logs, timeout=timeout, cwd=tmp, expect=out,
                          progress=progress)
        return json.loads(out.read_text()), proc.stderr


def run_logged(cmd: list[str], *, model: str, label: str, tree: Path, logs: str, timeout: int, cwd: str | Path,
               expect: Path, extra_env: dict[str, str] | None = None,
               progress: Callable[[str], None] | None = None) -> subprocess.CompletedProcess:
    """Run a verify subprocess with ``TORCH_LOGS`` set; turn its failure into one patchkit error.

    ``progress`` is called with each phase the runner enters (its ``@@patchkit-phase`` lines)."""
    env = {**os.environ, "TORCH_LOGS": logs, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
           **(extra_env or {})}
    proc = stream(cmd, env=env, timeout=timeout, cwd=cwd,
                  on_line=None if progress is None else
                  (lambda line: progress(line[len(PHASE_MARK):].strip()) if line.startswith(PHASE_MARK) else None))
    if proc.returncode != 0 or not expect.exists():
        missing = re.findall(r"ModuleNotFoundError: No module named '([^']+)'", proc.stderr)
        if missing:
            error: PatchkitError = EnvironmentProblem(
                f"verify of {label}: the vendored {model} tree imports {missing[-1]!r}, which is not installed "
                "in this environment (install the patchkit extras: pip install -e '.[all]')"
            )
        else:
            error = subprocess_failure(f"verify run of {label} ({model})", proc.returncode, proc.stderr,
                                       f"verify-{model}-{label}")
        error.variant = label  # type: ignore[attr-defined]  # which tree failed: upgrade-check tells them apart
        raise error
    return proc


#: runner processes started by ``stream`` and still running (``kill_children`` ends them on an interrupt)
_CHILDREN: set[subprocess.Popen] = set()


def kill_children() -> None:
    """Kill every running runner: an interrupt reaches the main thread only, the runners wait in worker threads."""
    for child in list(_CHILDREN):
        child.kill()


def stream(cmd: list[str], *, env: dict[str, str], timeout: float, cwd: str | Path,
           on_line: Callable[[str], None] | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)``, calling ``on_line`` with each stderr line as it
    comes; the child is killed on timeout or when this process is interrupted."""
    import threading

    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    _CHILDREN.add(child)
    out: list[str] = []
    err: list[str] = []
    reader = threading.Thread(target=lambda: out.append(child.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    fired: list[bool] = []
    timer = threading.Timer(timeout, lambda: (fired.append(True), child.kill()))
    timer.start()
    try:
        for line in child.stderr:  # type: ignore[union-attr]
            err.append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))
        child.wait()
        reader.join()
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        timer.cancel()
        _CHILDREN.discard(child)
    if fired:
        raise subprocess.TimeoutExpired(cmd, timeout, "".join(out), "".join(err))
    return subprocess.CompletedProcess(cmd, child.returncode, "".join(out), "".join(err))


def _phase_text(log: str, phase: str) -> str:
    keep, current = [], None
    for line in log.splitlines():
        if line.startswith(PHASE_MARK):
            current = line[len(PHASE_MARK):].strip()
            continue
        if current == phase:
            keep.append(line)
    return "\n".join(keep)


def summarize_variant(label: str, tree: Path, data: dict, log: str) -> VariantReport:
    parsed = logparse.parse(_phase_text(log, "workload"), tree)
    return VariantReport(
        label=label,
        tree=str(tree),
        graph_breaks=max(data["counters"]["graph_breaks"], parsed.graph_breaks),
        graph_breaks_logged=parsed.graph_breaks,
        recompiles=parsed.recompiles,
        graphs=data["counters"]["graphs"],
        fullgraph_ok=data["fullgraph_ok"],
        fullgraph_error=data["fullgraph_error"],
        recompile_limit_hit=parsed.recompile_limit_hit or logparse.parse(_phase_text(log, "forecast")).recompile_limit_hit,
        steady_state_ok=data["steady_ok"],
        steady_state_error=data["steady_error"],
        break_sites=[s.to_json() for s in parsed.break_sites],
        recompile_sites=[s.to_json() for s in parsed.recompile_sites],
        describe=data["describe"],
        counter_reasons=data["counters"].get("reasons", {}),
        log_excerpt=list(parsed.lines[:40]),
    )


def _scale(context: np.ndarray) -> float:
    c = np.asarray(context, dtype=np.float64)
    c = c[np.isfinite(c)]
    if c.size == 0:
        return 1.0
    s = float(np.std(c))
    if s == 0.0:
        s = float(np.mean(np.abs(c)))
    return s if s > 0 else 1.0


def scaled_mae(preds: list, truths: list, contexts: list) -> float:
    """Mean over series of MAE / std(context): comparable across 1e-4 and 1e6 magnitudes."""
    return float(np.mean([
        float(np.nanmean(np.abs(np.asarray(p, float) - np.asarray(y, float)))) / _scale(c)
        for p, y, c in zip(preds, truths, contexts)
    ]))


def compare_forecasts(series: list, truth: list[np.ndarray], contexts: list[np.ndarray],
                      upstream_eager: list, patched_compiled: list, tolerance: float) -> MaeReport:
    rows = []
    for meta, y, ctx, a, b in zip(series, truth, contexts, upstream_eager, patched_compiled):
        a, b, y = np.asarray(a, float), np.asarray(b, float), np.asarray(y, float)
        scale = _scale(ctx)
        rows.append({
            "series": meta["name"],
            "source": meta["source"],
            "scale": scale,
            "mae_upstream_eager": float(np.nanmean(np.abs(a - y))),
            "mae_patched_compiled": float(np.nanmean(np.abs(b - y))),
            "max_abs_pred_diff": float(np.nanmax(np.abs(a - b))) if np.isfinite(a - b).any() else float("nan"),
        })
    up = float(np.mean([r["mae_upstream_eager"] / r["scale"] for r in rows]))
    pc = float(np.mean([r["mae_patched_compiled"] / r["scale"] for r in rows]))
    maxdiff = float(np.nanmax([r["max_abs_pred_diff"] / r["scale"] for r in rows]))
    return MaeReport(up, pc, abs(up - pc), maxdiff, tolerance,
                     "mean over series of MAE / std(context) (scale-free); max_abs_pred_diff also scaled",
                     rows)


def hazards_shown(graph_breaks: int, recompiles: int, limit_hit: bool) -> list[str]:
    return [h for h, shown in (("graph_breaks", graph_breaks > 0), ("recompiles", recompiles > 0),
                               ("recompile_limit", limit_hit)) if shown]


def hazard_failures(ps: PatchSet, graph_breaks: int, recompiles: int, limit_hit: bool) -> list[str]:
    """A verify that passes must have shown the hazard: the upstream variant exhibits one the patch set claims."""
    if not ps.hazards:
        return []
    shown = set(hazards_shown(graph_breaks, recompiles, limit_hit))
    if shown & set(ps.hazards):
        return []
    return [f"workload does not exercise {' or '.join(ps.hazards)}: the upstream variant shows "
            f"{', '.join(sorted(shown)) or 'no hazard'}, so this run proves nothing about the fix"]


def verify_trees(
    ps: PatchSet, upstream_tree: Path, patched_tree: Path, upstream_version: str, *,
    weights: str | None = None, device: str = "cpu", extra_logs: tuple[str, ...] = (),
    tolerance: float | None = None, forecasts: bool = True, backend: str = "inductor", size: str = "tiny",
    python: str | Path | None = None, progress: Callable[[str], None] = lambda msg: None,
) -> tuple[VerifyReport, dict[str, str]]:
    """Verify two trees of ``ps``'s model.  Returns the report and the raw logs per variant.

    ``progress`` hears each phase a variant enters (workload, steady, fullgraph, forecast)."""
    from concurrent.futures import ThreadPoolExecutor

    def phase_of(label: str) -> Callable[[str], None]:
        return lambda phase: progress(f"{ps.model} {label}: {phase}")

    tol = ps.mae_tolerance if tolerance is None else tolerance
    jobs = {"upstream": Path(upstream_tree).resolve(), "patched": Path(patched_tree).resolve()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            label: pool.submit(run_variant, ps.model, tree, label, weights=weights, device=device,
                               extra_logs=extra_logs, backend=backend, size=size, python=python,
                               progress=phase_of(label),
                               forecast=(("eager" if label == "upstream" else "compiled") if forecasts else "none"))
            for label, tree in jobs.items()
        }
        try:
            results = {label: f.result() for label, f in futures.items()}
        except BaseException:
            kill_children()  # the other variant's run is of no use now; do not wait minutes for it
            raise
    variants = {label: summarize_variant(label, jobs[label], *results[label]) for label in jobs}
    up_data, pa_data = results["upstream"][0], results["patched"][0]

    mae = None
    failures = []
    if forecasts:
        series = up_data["series"]
        mae = compare_forecasts(series, [s["truth"] for s in series], [s["context"] for s in series],
                                up_data["forecast_eager"], pa_data["forecast_compiled"], tol)
        if not (mae.abs_diff <= tol and mae.max_abs_pred_diff <= tol):
            failures.append(f"forecast drift: MAE diff {mae.abs_diff:.3g}, max pred diff {mae.max_abs_pred_diff:.3g} "
                            f"(scaled) exceed tolerance {tol:g}")
    failures += hazard_failures(ps, variants["upstream"].graph_breaks, variants["upstream"].recompiles,
                                variants["upstream"].recompile_limit_hit)
    p = variants["patched"]
    if p.graph_breaks:
        failures.append(f"patched tree still has {p.graph_breaks} graph break(s)")
    if not p.fullgraph_ok:
        failures.append(f"patched tree does not compile with fullgraph=True: {p.fullgraph_error}")
    if p.recompiles > ps.warmup_recompiles:
        failures.append(f"patched tree recompiled {p.recompiles} time(s) while warming up "
                        f"(the {ps.model} patch set allows {ps.warmup_recompiles})")
    if not p.steady_state_ok:
        failures.append(f"patched tree recompiled after warm-up: {p.steady_state_error}")
    if p.recompile_limit_hit:
        failures.append("patched tree hit the recompile limit (Dynamo silently fell back to eager)")
    report = VerifyReport(
        model=ps.model,
        torch_version=up_data["torch_version"],
        upstream_version=upstream_version,
        device=device,
        analysis_backend=backend,
        upstream=variants["upstream"],
        patched=variants["patched"],
        mae=mae,
        ok=not failures,
        failures=failures,
        size=size,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return report, {label: results[label][1] for label in jobs}
