"""``verify --traffic``: a varied stream of calls through the users' entry point, upstream vs patched.

Upstream runs its profile eagerly (the reference outputs) and compiled with the
analysis backend (Dynamo decides breaks and recompiles before any backend runs,
so ``eager`` is enough to show the hazard and costs no inductor compiles).
Patched runs eagerly, compiled with inductor, then a steady pass with new data
under ``fail_on_recompile``, then ``repeats`` more steady passes over the eager
data (with ``load`` busy processes on the CPU), each compared with eager per
element: a rare or load-dependent drift confined to a few series is caught
there, where one pass and a relative L2 would miss it.  The two variants run one after the other, so
neither's timings share the CPU with the other.

It fails when a patched unit makes more graphs than its patch set's budget, a
recompile limit is hit, the steady pass recompiles, a patched call errors, a
graph breaks, patched eager differs from upstream eager (NaN placement
included), compiled output drifts from eager (relative L2 per call, and per
element against the output's scale, in every pass), or the upstream variant shows none
of the hazards the patch set claims.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from patchkit.errors import BadInput, EnvironmentProblem
from patchkit.patchset import PatchSet, TrafficSpec

from . import logs as logparse
from .report import ALWAYS_LOGS, _phase_text, hazard_failures, hazards_shown, run_logged
from .traffic import compare, compare_distribution, percentiles


@dataclass(frozen=True)
class UnitReport:
    name: str
    graphs: int
    budget: int | None
    phases: list[str]
    within_budget: bool


@dataclass(frozen=True)
class TrafficVariant:
    label: str
    backend: str
    graph_breaks: int
    graphs: int
    recompiles: int
    recompile_sites: list[dict]
    recompile_limit_hit: bool
    limit_sites: list[dict]
    units: list[UnitReport]
    eager: dict[str, Any]
    compiled: dict[str, Any]
    steady: dict[str, Any] | None
    steady_ok: bool
    steady_error: str
    call_errors: list[dict]
    break_sites: list[dict] = field(default_factory=list)
    #: compiled-pass calls that ran the compiled module's eager code on purpose (codemod eager-when)
    eager_when_calls: int = 0


@dataclass(frozen=True)
class FidelityCheck:
    what: str
    bound: float
    calls: int
    worst_rel: float
    worst_call: str
    nan_mismatch_calls: list[str]
    shape_mismatch_calls: list[str]
    ok: bool
    #: worst ``max |got - want| / mean |want|`` over the calls (compare.max_scaled), where it was found, and the
    #: bound it is held to (None: reported only)
    worst_elem: float = 0.0
    worst_elem_call: str = ""
    elem_bound: float | None = None


@dataclass(frozen=True)
class TrafficReport:
    model: str
    torch_version: str
    upstream_version: str
    device: str
    mode: str
    size: str
    parameters: int
    seed: int
    calls: list[dict]
    ranges: dict[str, Any]
    describe: dict[str, Any]
    upstream: TrafficVariant
    patched: TrafficVariant
    fidelity: list[FidelityCheck]
    hazards_claimed: list[str]
    hazards_shown: list[str]
    latency: dict[str, Any]
    ok: bool
    failures: list[str]
    sample_note: str = ""
    created: str = ""  # when the report was made, UTC, ISO 8601
    #: steady passes repeated over the eager data and compared per element, and the busy processes beside them
    repeats: int = 0
    load_procs: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@dataclass(frozen=True)
class TrafficRun:
    """One traffic-runner subprocess: its report (``traffic.json``: calls, passes, counters, graphs per unit), the
    outputs of each pass (``arrays["eager" | "compiled" | "aot"]``: call index -> array; ``arrays["repeats"]``,
    one such dict per steady repeat) and its log (stderr, with the ``TORCH_LOGS`` output)."""

    data: dict[str, Any]
    arrays: dict[str, Any]
    log: str


def run_traffic(ps: PatchSet, tree: Path, label: str, passes: str, *, size: str = "tiny", calls: int = 24,
                seed: int = 0, weights: str | None = None, device: str = "cpu", backend: str = "inductor",
                mode: str | None = None, extra_logs: tuple[str, ...] = (), timeout: int = 7200,
                extra_env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> TrafficRun:
    """Run the traffic profile over ``tree`` (pristine or patched) in a fresh process: ``passes`` is a comma list of
    ``eager``, ``compiled``, ``steady`` and ``aot``; ``label`` names the run in logs and errors.  The one way
    verify, bench and the compile cache drive a model's traffic."""
    logs = ",".join(dict.fromkeys((*ALWAYS_LOGS, *extra_logs)))
    with tempfile.TemporaryDirectory(prefix=f"patchkit-traffic-{label}-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "patchkit.verify.traffic_runner", ps.model, str(tree), str(out), "--passes",
               passes, "--calls", str(calls), "--seed", str(seed), "--size", size, "--device", device, "--backend",
               backend]
        if mode:
            cmd += ["--mode", mode]
        if weights:
            cmd += ["--weights", weights]
        cmd += list(extra_args)
        proc = run_logged(cmd, model=ps.model, label=label, tree=tree, logs=logs, timeout=timeout, cwd=tmp,
                          expect=out / "traffic.json", extra_env=extra_env)
        data = json.loads((out / "traffic.json").read_text())
        arrays = {name: _load(out / f"{name}.npz") for name in ("eager", "compiled", "aot")}
        arrays["repeats"] = [_load(p) for p in sorted(out.glob("repeat*.npz"), key=lambda p: int(p.stem[6:]))]
    return TrafficRun(data, arrays, proc.stderr)


def _variant(label: str, data: dict, log: str, tree: Path, spec: TrafficSpec | None) -> TrafficVariant:
    parsed = logparse.parse(_phase_text(log, "traffic-compiled"), tree)
    steady_log = logparse.parse(_phase_text(log, "traffic-steady"), tree)
    passes = data["passes"]
    units = []
    for name, graphs in sorted(data.get("unit_graphs", {}).items()):
        budget = spec.graph_budget.get(name) if spec else None
        units.append(UnitReport(name, graphs, budget, list((spec.phases if spec else {}).get(name, ())),
                                budget is not None and graphs <= budget))
    steady = passes.get("steady")
    steady_errors = [*(steady or {}).get("errors", []),
                     *(e for rp in passes.get("repeats", {}).get("passes", []) for e in rp["errors"])]
    errors = [dict(e, phase=phase) for phase in ("eager", "compiled") for e in passes.get(phase, {}).get("errors", [])]
    return TrafficVariant(
        label=label,
        backend=data["backend"] + (f" ({data['mode']})" if data.get("mode") else ""),
        graph_breaks=max(data.get("counters", {}).get("graph_breaks", 0), parsed.graph_breaks),
        graphs=sum(data.get("unit_graphs", {}).values()),
        recompiles=parsed.recompiles,
        recompile_sites=[s.to_json() for s in parsed.recompile_sites],
        recompile_limit_hit=parsed.recompile_limit_hit or steady_log.recompile_limit_hit,
        limit_sites=[s.to_json() for s in (*parsed.limit_sites, *steady_log.limit_sites)],
        units=units,
        eager=percentiles(_finite(passes.get("eager", {}).get("times_s", []))),
        compiled={**percentiles(_finite(passes.get("compiled", {}).get("times_s", []))),
                  "wall_s": passes.get("compiled", {}).get("wall_s")},
        steady=None if steady is None else percentiles(_finite(steady["times_s"])),
        steady_ok=steady is not None and not steady_errors,
        steady_error="" if not steady_errors else f"{steady_errors[0]['call']}: {steady_errors[0]['error']}",
        call_errors=errors,
        break_sites=[s.to_json() for s in parsed.break_sites],
        eager_when_calls=int(data.get("eager_when_calls", 0)),
    )


def _finite(xs: list[float]) -> list[float]:
    return [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]


def _check(what: str, bound: float, got: dict[str, np.ndarray] | list[dict[str, np.ndarray]],
           want: dict[str, np.ndarray], calls: list[dict], kind: str, distribution: bool = False,
           elem_bound: float | None = None) -> FidelityCheck | None:
    """Compare every call's ``kind`` output of ``got`` with ``want``: the worst relative L2 against ``bound`` and,
    with ``elem_bound``, the worst element against the output's scale.  ``got`` may be a list of passes (steady
    repeats over the same data): each is compared, and a call is named with its pass."""
    runs = [("", got)] if isinstance(got, dict) else [(f" (repeat {k + 1})", g) for k, g in enumerate(got)]
    worst, worst_call, elem, elem_call = 0.0, "", 0.0, ""
    nan_bad, shape_bad = [], []
    n = 0
    for suffix, run in runs:
        for call in calls:
            key, name = f"{call['index']}.{kind}", f"#{call['index']}{suffix}"
            if key not in want or key not in run:
                if (key in want) != (key in run):
                    shape_bad.append(f"{name} (output missing on one side)")
                continue
            n += 1
            if distribution:
                axis = int(want.get(f"{call['index']}.sample_axis", np.asarray(0)))
                c = compare_distribution(run[key], want[key], axis)
            else:
                c = compare(run[key], want[key])
            if not c.shape_ok:
                shape_bad.append(f"{name} {run[key].shape} vs {want[key].shape}")
                continue
            if c.nan_mismatch:
                nan_bad.append(f"{name} ({c.nan_mismatch} positions)")
            if c.rel_l2 > worst or not worst_call:
                worst, worst_call = c.rel_l2, name
            if c.max_scaled > elem or not elem_call:
                elem, elem_call = c.max_scaled, name
    if n == 0 and not shape_bad:
        return None
    ok = worst <= bound and not nan_bad and not shape_bad and (elem_bound is None or elem <= elem_bound)
    return FidelityCheck(what, bound, n, worst, worst_call, nan_bad, shape_bad, ok, elem, elem_call, elem_bound)


def fidelity_failure(c: FidelityCheck) -> str:
    """One failure line for a check that did not hold: how far, where, and NaN or shape mismatches."""
    detail = []
    if c.worst_rel > c.bound:
        detail.append(f"worst relative L2 {c.worst_rel:.3g} at {c.worst_call} > {c.bound:g}")
    if c.elem_bound is not None and c.worst_elem > c.elem_bound:
        detail.append(f"worst element {c.worst_elem:.3g} of the output's scale at {c.worst_elem_call} "
                      f"> {c.elem_bound:g}")
    if c.nan_mismatch_calls:
        detail.append(f"NaN placement differs at {', '.join(c.nan_mismatch_calls[:3])}")
    if c.shape_mismatch_calls:
        detail.append(f"shapes differ at {', '.join(c.shape_mismatch_calls[:3])}")
    return f"{c.what}: {'; '.join(detail)}"


def run_upstream(ps: PatchSet, upstream_tree: Path, *, size: str = "tiny", calls: int = 24, seed: int = 0,
                 weights: str | None = None, device: str = "cpu", analysis_backend: str = "eager",
                 extra_logs: tuple[str, ...] = (), timeout: int = 7200, progress=lambda msg: None) -> TrafficRun:
    """The upstream variant of ``verify_traffic``: the profile eagerly (the reference outputs), then compiled with
    the analysis backend."""
    progress(f"{ps.model} upstream: {calls} calls eager, then compiled with the {analysis_backend} backend")
    return run_traffic(ps, Path(upstream_tree).resolve(), "upstream", "eager,compiled", size=size, calls=calls,
                       seed=seed, weights=weights, device=device, backend=analysis_backend, extra_logs=extra_logs,
                       timeout=timeout)


def verify_traffic(ps: PatchSet, upstream_tree: Path, patched_tree: Path, upstream_version: str, *,
                   size: str = "tiny", calls: int = 24, seed: int = 0, weights: str | None = None,
                   device: str = "cpu", mode: str | None = None, analysis_backend: str = "eager",
                   patched_backend: str = "inductor", extra_logs: tuple[str, ...] = (), timeout: int = 7200,
                   repeats: int = 2, load: int = 0, upstream_run: TrafficRun | None = None,
                   progress=lambda msg: None) -> tuple[TrafficReport, dict[str, str]]:
    """Upstream vs patched over the traffic profile.  ``upstream_run``: the upstream variant's run from an earlier
    call with the same tree, size, calls, seed, weights, device and analysis backend
    (``run_upstream``): two patched variants checked against one upstream run need not run it twice."""
    spec = ps.traffic
    if spec is None:
        raise BadInput(f"the {ps.model} patch set declares no traffic budget (PatchSet.traffic); "
                       "verify --traffic has nothing to hold it to")
    if device.startswith("cuda") or mode == "reduce-overhead":
        import torch

        if not torch.cuda.is_available():
            what = f"--device {device}" if device.startswith("cuda") else f"--mode {mode}"
            raise EnvironmentProblem(f"{what}: not applicable on this machine (torch sees no CUDA device); "
                                     "nothing was run, and this is not a pass")
    if calls < 1:
        raise BadInput("--calls must be at least 1")
    if repeats < 0 or load < 0:
        raise BadInput("--repeats and --load take a count of 0 or more")
    up_tree, pa_tree = Path(upstream_tree).resolve(), Path(patched_tree).resolve()
    if upstream_run is None:
        upstream_run = run_upstream(ps, up_tree, size=size, calls=calls, seed=seed, weights=weights, device=device,
                                    analysis_backend=analysis_backend, extra_logs=extra_logs, timeout=timeout,
                                    progress=progress)
    up_data, up_arrays, up_log = upstream_run.data, upstream_run.arrays, upstream_run.log
    if (up_data["seed"], len(up_data["calls"]), up_data["size"]) != (seed, calls, size):
        raise ValueError("upstream_run comes from another profile (seed, calls or size)")
    progress(f"{ps.model} patched: {calls} calls eager, compiled ({patched_backend}{f', {mode}' if mode else ''}), "
             f"then a steady pass under fail_on_recompile and {repeats} more over the eager data"
             + (f" beside {load} busy process(es)" if load else ""))
    patched = run_traffic(ps, pa_tree, "patched", "eager,compiled,steady", size=size, calls=calls, seed=seed,
                          weights=weights, device=device, backend=patched_backend, mode=mode, extra_logs=extra_logs,
                          timeout=timeout, extra_args=("--repeats", str(repeats), "--load", str(load)))
    pa_data, pa_arrays, pa_log = patched.data, patched.arrays, patched.log
    up = _variant("upstream", up_data, up_log, up_tree, None)  # budgets bind the patched tree only
    pa = _variant("patched", pa_data, pa_log, pa_tree, spec)
    call_list = pa_data["calls"]

    checks = [
        _check("patched eager vs upstream eager (deterministic outputs)", spec.eager_rtol, pa_arrays["eager"],
               up_arrays["eager"], call_list, "point"),
        _check("patched eager vs upstream eager (sampled paths, same seed)", spec.eager_rtol, pa_arrays["eager"],
               up_arrays["eager"], call_list, "samples"),
        _check("patched compiled vs patched eager (deterministic outputs)", spec.compiled_rtol,
               pa_arrays["compiled"], pa_arrays["eager"], call_list, "point", elem_bound=spec.compiled_elem_tol),
        _check("patched compiled vs patched eager (sampled paths: 10/50/90% quantiles)", spec.sample_rtol,
               pa_arrays["compiled"], pa_arrays["eager"], call_list, "samples", distribution=True),
    ]
    if pa_arrays["repeats"]:
        n = len(pa_arrays["repeats"])
        checks += [
            _check(f"patched compiled, {n} steady repeats vs patched eager (deterministic outputs)",
                   spec.compiled_rtol, pa_arrays["repeats"], pa_arrays["eager"], call_list, "point",
                   elem_bound=spec.compiled_elem_tol),
            _check(f"patched compiled, {n} steady repeats vs patched eager (sampled paths: 10/50/90% quantiles)",
                   spec.sample_rtol, pa_arrays["repeats"], pa_arrays["eager"], call_list, "samples",
                   distribution=True),
        ]
    fidelity = [c for c in checks if c is not None]

    failures: list[str] = []
    failures += spec.budget_problems()
    failures += hazard_failures(ps, up.graph_breaks, up.recompiles, up.recompile_limit_hit)
    for u in pa.units:
        if u.budget is None:
            failures.append(f"compiled unit {u.name!r} has no graph budget in the {ps.model} patch set")
        elif not u.within_budget:
            failures.append(f"{u.name}: {u.graphs} graphs over the profile, budget {u.budget}")
    missing = sorted(set(spec.graph_budget) - {u.name for u in pa.units})
    if missing:
        failures.append(f"budgeted unit(s) {', '.join(missing)} were never compiled by the harness")
    if pa.graph_breaks:
        failures.append(f"patched tree has {pa.graph_breaks} graph break(s) over the profile")
    if pa.recompile_limit_hit:
        names = ", ".join(s["function"] for s in pa.limit_sites) or "a function"
        failures.append(f"patched {names} hit the recompile limit (Dynamo silently fell back to eager)")
    if not pa.steady_ok:
        failures.append(f"steady pass recompiled or failed: {pa.steady_error or 'not run'}")
    for e in pa.call_errors[:3]:
        failures.append(f"patched {e['phase']} call {e['call']} raised {e['error']}")
    if len(pa.call_errors) > 3:
        failures.append(f"... and {len(pa.call_errors) - 3} more patched call error(s) (see call_errors)")
    for e in up.call_errors:
        if e["phase"] == "eager":
            failures.append(f"upstream eager call {e['call']} raised {e['error']} (the profile must be valid input)")
    failures += [fidelity_failure(c) for c in fidelity if not c.ok]
    if not any(c.what.startswith("patched eager vs upstream eager") for c in fidelity):
        failures.append("no output to compare: the harness returned neither point forecasts nor samples")

    eager_p50 = pa.eager.get("p50_s")
    steady_p50 = (pa.steady or {}).get("p50_s")
    latency = {
        "upstream_eager": up.eager, "patched_eager": pa.eager, "patched_compiled_cold": pa.compiled,
        "patched_steady": pa.steady,
        "steady_speedup_vs_patched_eager": (eager_p50 / steady_p50) if eager_p50 and steady_p50 else None,
        "steady_speedup_vs_upstream_eager": (up.eager["p50_s"] / steady_p50) if steady_p50 else None,
    }
    report = TrafficReport(
        model=ps.model, torch_version=pa_data["torch_version"], upstream_version=upstream_version, device=device,
        mode=mode or "default", size=size, parameters=int(pa_data["parameters"]), seed=seed, calls=call_list,
        ranges=pa_data["ranges"], describe=pa_data["describe"], upstream=up, patched=pa, fidelity=fidelity,
        hazards_claimed=list(ps.hazards), hazards_shown=hazards_shown(up.graph_breaks, up.recompiles,
                                                                       up.recompile_limit_hit),
        latency=latency, ok=not failures, failures=failures, sample_note=spec.sample_note,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        repeats=len(pa_arrays["repeats"]), load_procs=int(pa_data["passes"].get("repeats", {}).get("load_procs", 0)),
    )
    return report, {"upstream": up_log, "patched": pa_log}
