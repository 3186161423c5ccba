"""The three models through their users' entry points on a short tiny traffic profile.

Patched eager must equal upstream eager call by call (NaN placement and same-seed sampled paths included)
through Chronos2Pipeline.predict, TotoForecaster.forecast (mean and sampled paths) and KronosPredictor.predict /
predict_batch (top-p sampling): each traffic report's eager checks.  The patched models run compiled (eager
backend: Dynamo decides graphs before any backend runs) and each is held to its graph budget; one pins that the
traffic check catches Toto patched without its batch fixes (recompile limit).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from patchkit import api, patches
from patchkit.apply import apply as apply_patchset
from patchkit.verify.traffic_report import run_upstream, verify_traffic



def _trees(root: Path, model: str) -> tuple[Path, Path]:
    ws = api.workspace(root)
    return ws.pristine(model), ws.patched(model)


def _hazards(log: str, tree: Path) -> dict[str, list]:
    """``patchkit scan``'s dynamic pass over a traffic run's log: kind -> its hazards."""
    from patchkit.dynamic_scan import analyse
    from patchkit.scan import scan_tree

    hazards, _ = analyse(log, Path(tree).resolve(), list(scan_tree(Path(tree)).findings))
    out: dict[str, list] = {}
    for h in hazards:
        out.setdefault(h.kind, []).append(h)
    return out


def _no_hazard_past_the_budget(log: str, tree: Path) -> None:
    """A patched tree's scan: no graph break, no recompile-limit hit (its recompiles are the budgeted classes)."""
    from patchkit.dynamic_scan import BREAKS

    found = _hazards(log, tree)
    assert not any(k in found for k in (*BREAKS, "recompile-limit")), found


def _eager_checks(report) -> list:
    """The traffic report's patched-eager-against-upstream-eager checks, call by call over the whole profile."""
    checks = [c for c in report.fidelity if c.what.startswith("patched eager vs upstream eager")]
    assert checks, "the harness returned nothing to compare"
    for c in checks:
        assert c.ok and not c.nan_mismatch_calls and not c.shape_mismatch_calls and c.calls > 0, c
    return checks


@pytest.mark.slow
def test_kronos_traffic_holds_its_graph_budget(kronos_ws: Path):
    """12 varied predict / predict_batch calls: upstream hits the recompile limit, patched stays in budget
    (aot_eager: Dynamo's graphs and guards, AOTAutograd's functionalised cache writes; the package test runs
    inductor's code for these steps)."""
    ps = patches.get("kronos")
    pristine, patched = _trees(kronos_ws, "kronos")
    upstream = run_upstream(ps, pristine, calls=12)
    report, logs = verify_traffic(ps, pristine, patched, "fixture", calls=12, patched_backend="aot_eager",
                                  upstream_run=upstream)
    assert report.ok, report.failures
    (check,) = _eager_checks(report)  # predict's mean over top-p paths: a seeded draw, equal value for value
    assert check.worst_rel == 0.0 and check.calls == 12, check
    assert report.upstream.recompile_limit_hit and "recompile_limit" in report.hazards_shown
    # decode_s1/decode_s2 serve the rolled-window steps, step_s1/step_s2 the decode cache's growing-window steps
    assert {u.name: u.graphs <= u.budget for u in report.patched.units} == {
        "decode_s1": True, "decode_s2": True, "step_s1": True, "step_s2": True}
    assert report.patched.steady_ok and not report.patched.recompile_limit_hit

    # patchkit scan on the same runs: the rotary cache's writes are the hazard, confirmed statically
    found = _hazards(upstream.log, pristine)
    (state,) = found["module-state"]
    assert state.site.startswith("model/module.py:") and state.codemod == "rope-static-cache" and state.confirms
    assert found["recompile-limit"] and found["static-shape"][0].codemod == "dynamic-step-inputs"
    _no_hazard_past_the_budget(logs["patched"], patched)


#: the steps (and the cache option) that merge Toto's batch and variate classes into one graph per phase
_TOTO_BATCH_FIXES = ("dynamic-step-inputs", "pad-single-row")


def _toto_without_batch_fixes(toto_ws: Path, root: Path) -> tuple[Path, Path, object]:
    """A workspace patched with the Toto patch set as it was before the batch fixes: the same pristine tree."""
    ps = patches.get("toto")
    steps = []
    for step in ps.steps:
        if step.codemod in _TOTO_BATCH_FIXES:
            continue
        if "row_dims" in step.options:
            step = dataclasses.replace(step, options={k: v for k, v in step.options.items() if k != "row_dims"})
        steps.append(step)
    bare = dataclasses.replace(ps, steps=tuple(steps))
    return (*_toto_patched_with(toto_ws, root, bare), bare)


def _toto_patched_with(toto_ws: Path, root: Path, ps) -> tuple[Path, Path]:
    """A workspace at ``root`` with the same pristine Toto tree as ``toto_ws``, patched with ``ps``."""
    src = api.workspace(toto_ws)
    ws = api.workspace(root)
    shutil.copytree(src.pristine("toto"), ws.pristine("toto"))
    for lock in src.vendor_dir.glob("toto*.json"):
        shutil.copy2(lock, ws.vendor_dir / lock.name)
    apply_patchset(ws, ps)
    return ws.pristine("toto"), ws.patched("toto")


@pytest.mark.slow
def test_toto_traffic_holds_its_budget(toto_ws: Path):
    """24 varied calls (seed 3): one graph per variates {1, more} and phase (batch 1 runs as two rows; the cache's
    sizes are dynamic from the first graph), within the budget of 2 per phase, no limit hit, and the steady passes
    recompile nothing; patchkit scan over the same runs."""
    ps = patches.get("toto")
    pristine, patched = _trees(toto_ws, "toto")
    upstream = run_upstream(ps, pristine, calls=24, seed=3)
    report, logs = verify_traffic(ps, pristine, patched, "0.2.0", calls=24, seed=3, patched_backend="eager",
                                  upstream_run=upstream)
    (unit,) = report.patched.units
    assert unit.graphs <= ps.traffic.graph_budget["backbone"] == 4, report.patched.recompile_sites
    assert report.patched.steady_ok and not report.patched.recompile_limit_hit and report.repeats == 2
    assert report.upstream.recompiles > report.patched.recompiles
    assert report.ok, report.failures
    eager = _eager_checks(report)  # the static cache attends over the full buffer with a mask: equal to rounding
    assert {c.what.split("(")[1].split()[0] for c in eager} == {"deterministic", "sampled"}
    assert all(c.worst_rel <= ps.traffic.eager_rtol for c in eager), eager

    # patchkit scan on the same runs: the KV cache's .item() reads, statically confirmed, and the limit
    found = _hazards(upstream.log, pristine)
    syncs = {h.site for h in found["host-sync"] if h.codemod == "item-scalar" and h.confirms}
    assert syncs and all(s.startswith("toto/model/util.py:") for s in syncs), found["host-sync"]
    assert found["recompile-limit"] and found["size-1-specialisation"][0].codemod == "pad-single-row"
    _no_hazard_past_the_budget(logs["patched"], patched)


@pytest.mark.slow
@pytest.mark.counterfactual
def test_toto_traffic_check_catches_a_tree_without_its_batch_fixes(toto_ws: Path, tmp_path: Path):
    """Without dynamic-step-inputs, pad-single-row and the cache's row_dims, patched Toto compiles a graph per batch
    {1, more} x variates {1, more} x phase, plus a first graph static in the cache's sizes: on the same profile
    (24 calls, seed 3) it hits the recompile limit and the rest of the calls run eagerly.  verify must fail on it.
    A counterfactual (the fixes are needed, and verify sees it): benchmarks/counterfactual.sh, not CI."""
    ps = patches.get("toto")
    pristine, _ = _trees(toto_ws, "toto")
    upstream = run_upstream(ps, pristine, calls=24, seed=3)
    bare_pristine, bare_patched, bare = _toto_without_batch_fixes(toto_ws, tmp_path / "bare")
    report, _ = verify_traffic(bare, bare_pristine, bare_patched, "0.2.0", calls=24, seed=3,
                               patched_backend="eager", upstream_run=upstream, repeats=0)
    (unit,) = report.patched.units
    assert report.patched.recompile_limit_hit, (unit.graphs, report.patched.recompile_sites)
    assert unit.graphs > bare.traffic.graph_budget["backbone"] and not unit.within_budget
    assert not report.ok and any("recompile" in f for f in report.failures), report.failures
    assert "graph_breaks" in report.hazards_shown  # the upstream shows its hazard on the same calls


@pytest.mark.slow
def test_chronos2_traffic_holds_its_graph_budget(chronos_ws: Path):
    """24 varied Chronos2Pipeline.predict calls (batch 1-8 with single series among them, histories around multiples
    of 16, one-patch and unrolled horizons, cross-learning): patched pipeline.model compiles 2 graphs (one-patch
    horizons, then every other call; single series share the batch's graph) and the steady pass recompiles nothing;
    the upstream recompiles on the same calls.  Seed 3 draws single-series calls after the first call, which cost
    two more graphs before pad-single-row and dynamic-step-inputs.  Eager backend: Dynamo decides graphs and guards
    before any backend runs (the inductor figures are in the README)."""
    ps = patches.get("chronos2")
    pristine, patched = _trees(chronos_ws, "chronos2")
    upstream = run_upstream(ps, pristine, calls=24, seed=3)
    report, logs = verify_traffic(ps, pristine, patched, "2.3.2", calls=24, seed=3, patched_backend="eager",
                                  upstream_run=upstream)
    (unit,) = report.patched.units
    assert unit.graphs <= ps.traffic.graph_budget["model"] == 2, report.patched.recompile_sites
    assert report.patched.steady_ok and not report.patched.recompile_limit_hit
    assert report.upstream.recompiles > report.patched.recompiles
    assert report.ok, report.failures
    (check,) = _eager_checks(report)  # deterministic quantiles on every call, the same to the bit
    assert check.worst_rel == 0.0 and check.calls == 24, check

    # patchkit scan on the same runs: the isnan guard, statically confirmed, and the batch and stride guards
    found = _hazards(upstream.log, pristine)
    (guard,) = found["data-dependent-branch"]
    assert guard.site.startswith("chronos/chronos2/model.py:") and guard.codemod == "isnan-guard" and guard.confirms
    assert {h.codemod for k in ("size-1-specialisation", "stride-guard") for h in found.get(k, [])} >= {
        "pad-single-row"}, found
    _no_hazard_past_the_budget(logs["patched"], patched)


#: calls (batch, variates, patches of history, patches of horizon, samples): one-patch histories (mean and sampled
#: paths, one variate and several) among longer ones, single series, one variate, and last one sampled path of one
#: series over three steps (one backbone row: eager code, so its draws are upstream's for the same seed)
_TOTO_ONE_PATCH_CALLS = ((2, 3, 5, 2, 0), (2, 3, 1, 2, 0), (3, 1, 7, 3, 0), (2, 1, 1, 1, 0), (1, 1, 3, 2, 0),
                         (4, 5, 2, 1, 0), (1, 2, 1, 2, 4), (2, 1, 1, 2, 3), (1, 2, 3, 3, 1))

_TOTO_ONE_PATCH_PROBE = """
import json, sys, pathlib
import numpy as np, torch
tree = pathlib.Path(sys.argv[1])
sys.path.insert(0, str(tree))
from torch._dynamo.utils import counters
from patchkit.patches.toto.harness import TotoHarness
from patchkit.verify.traffic import Call
h = TotoHarness(tree)
stride = int(h.backbone.patch_embed.stride)
compiled = h.serve(lambda m, name=None: torch.compile(m, backend="eager"))
eager = h.serve(lambda m, name=None: m)
out = []
for i, (b, v, p, hz, s) in enumerate(json.loads(sys.argv[2])):
    call = Call(index=i, batch=b, history=p * stride, horizon=hz * stride, variates=v, samples=s,
                options={"sampled": s > 0})
    torch.manual_seed(i)
    got = compiled(call, i)
    torch.manual_seed(i)
    want = eager(call, i)
    g, w = (got.point, want.point) if s == 0 else (got.samples, want.samples)
    out.append({"graphs": counters["stats"]["unique_graphs"], "max_abs": float(np.abs(g - w).max()),
                "eager_when": counters["patchkit"]["eager_when"]})
print("RESULT " + json.dumps(out))
"""


def _toto_one_patch_probe(tree: Path) -> list[dict]:
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _TOTO_ONE_PATCH_PROBE, str(tree), json.dumps(_TOTO_ONE_PATCH_CALLS)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_toto_one_patch_histories_cost_no_graph(toto_ws: Path):
    """A one-patch history is a patch count of 1, which Dynamo specialises: without eager-when its prefill compiles
    graphs of its own (one per variates class), past two per phase.  With it, the one-patch prefill runs the backbone's
    eager code and its decode steps the compiled graph: 4 graphs (prefill and decode, one variate and several), and
    every call, mean and same-seed sampled paths, equals the eager forecaster exactly (Dynamo's eager backend).  A
    sampled path of one series is one backbone row: it runs eager code too, so its draws are eager's (padded to two
    rows, the second row's draws shifted the series' own from the second step on)."""
    patched = _toto_one_patch_probe(api.workspace(toto_ws).patched("toto"))
    assert [r["graphs"] for r in patched][-1] == 4, patched
    assert all(r["max_abs"] == 0.0 for r in patched), patched
    # one routed prefill per one-patch call (calls 1, 3, 6 and 7; one sampling batch each), counted for verify, and
    # every step (prefill and two decode steps) of the single-row sampled call 8
    assert [r["eager_when"] for r in patched] == [0, 1, 1, 2, 2, 2, 3, 4, 7], patched


@pytest.mark.slow
@pytest.mark.counterfactual
def test_toto_one_patch_histories_without_eager_when_compile_graphs_of_their_own(toto_ws: Path, tmp_path: Path):
    """The same calls on a tree patched without eager-when: the one-patch prefills compile graphs of their own, past
    the budget.  A counterfactual (the step is needed): benchmarks/counterfactual.sh, not CI."""
    ps = patches.get("toto")
    bare = dataclasses.replace(ps, steps=tuple(s for s in ps.steps if s.codemod != "eager-when"))
    _, bare_tree = _toto_patched_with(toto_ws, tmp_path / "bare", bare)
    without = _toto_one_patch_probe(bare_tree)
    assert without[-1]["graphs"] > 4, without  # one-patch prefills: graphs of their own
