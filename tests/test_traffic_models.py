"""The three models through their users' entry points on a short tiny traffic profile.

Eager only, so no compile time: patched eager must equal upstream eager call by call (NaN placement and
same-seed sampled paths included) through Chronos2Pipeline.predict, TotoForecaster.forecast (mean and
sampled paths) and KronosPredictor.predict / predict_batch (top-p sampling).  One test runs today's
patched Toto compiled (eager backend: Dynamo decides graphs before any backend runs) and pins that the
traffic check catches its graphs over budget.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from patchkit import api, patches
from patchkit.verify.traffic_report import compare_eager, verify_traffic



def _trees(root: Path, model: str) -> tuple[Path, Path]:
    ws = api.workspace(root)
    return ws.pristine(model), ws.patched(model)


def _assert_identical(checks) -> None:
    assert checks, "the harness returned nothing to compare"
    for c in checks:
        assert c.ok and c.worst_rel == 0.0 and not c.nan_mismatch_calls, c


@pytest.mark.slow
def test_chronos2_pipeline_predict_patched_eager_equals_upstream(chronos_ws: Path):
    checks = compare_eager(patches.get("chronos2"), *_trees(chronos_ws, "chronos2"), calls=8)
    _assert_identical(checks)
    assert [c.calls for c in checks] == [8]  # deterministic quantiles on every call


@pytest.mark.slow
def test_toto_forecast_mean_and_samples_patched_eager_equals_upstream(toto_ws: Path):
    checks = compare_eager(patches.get("toto"), *_trees(toto_ws, "toto"), calls=8)
    assert {c.what.split("(")[1].split()[0] for c in checks} == {"deterministic", "sampled"}
    for c in checks:  # the static cache attends over the full buffer with a mask: equal to rounding
        assert c.ok and not c.nan_mismatch_calls and c.worst_rel <= patches.get("toto").traffic.eager_rtol, c


@pytest.mark.slow
def test_kronos_predictor_top_p_patched_eager_equals_upstream(kronos_ws: Path):
    checks = compare_eager(patches.get("kronos"), *_trees(kronos_ws, "kronos"), calls=6)
    _assert_identical(checks)


@pytest.mark.slow
def test_kronos_traffic_holds_its_graph_budget(kronos_ws: Path):
    """Inductor, 12 varied predict / predict_batch calls: upstream hits the recompile limit, patched stays in budget."""
    report, _ = verify_traffic(patches.get("kronos"), *_trees(kronos_ws, "kronos"), "fixture", calls=12)
    assert report.ok, report.failures
    assert report.upstream.recompile_limit_hit and "recompile_limit" in report.hazards_shown
    # decode_s1/decode_s2 serve the rolled-window steps, step_s1/step_s2 the decode cache's growing-window steps
    assert {u.name: u.graphs <= u.budget for u in report.patched.units} == {
        "decode_s1": True, "decode_s2": True, "step_s1": True, "step_s2": True}
    assert report.patched.steady_ok and not report.patched.recompile_limit_hit


@pytest.mark.slow
def test_traffic_catches_todays_toto_over_its_graph_budget(toto_ws: Path):
    ps = patches.get("toto")
    report, _ = verify_traffic(ps, *_trees(toto_ws, "toto"), "0.2.0", calls=6, patched_backend="eager")
    budget = ps.traffic.graph_budget["backbone"]
    (unit,) = report.patched.units
    assert unit.graphs > budget and not unit.within_budget
    assert not report.ok and any(f.startswith(f"backbone: {unit.graphs} graphs") for f in report.failures)
    assert "graph_breaks" in report.hazards_shown  # the upstream shows its hazard on the same calls
    guards = " ".join(s["reason"] for s in report.patched.recompile_sites)
    assert "size mismatch" in guards or "_host_empty" in guards


@pytest.mark.slow
def test_chronos2_traffic_holds_its_graph_budget(chronos_ws: Path):
    """24 varied Chronos2Pipeline.predict calls (batch 1-8, histories around multiples of 16, unrolled horizons,
    cross-learning): patched pipeline.model compiles 2 graphs (a batch-1 graph, then one dynamic graph) and the steady
    pass recompiles nothing; the upstream recompiles on the same calls.  Eager backend: Dynamo decides graphs and
    guards before any backend runs (the inductor figures are in the README)."""
    ps = patches.get("chronos2")
    report, _ = verify_traffic(ps, *_trees(chronos_ws, "chronos2"), "2.3.2", calls=24, patched_backend="eager")
    (unit,) = report.patched.units
    assert unit.graphs <= ps.traffic.graph_budget["model"] == 2, report.patched.recompile_sites
    assert report.patched.steady_ok and not report.patched.recompile_limit_hit
    assert report.upstream.recompiles > report.patched.recompiles
    assert report.ok, report.failures
