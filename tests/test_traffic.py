"""verify --traffic end to end on a fixture model (our own code): budgets, fidelity, hazard, steady pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchkit.verify.traffic import Call, TrafficRanges, compare, compare_distribution, profile
from patchkit.render import traffic as render
from patchkit.verify.traffic_report import _check, fidelity_failure, verify_traffic

from . import traffic_fixture
from .conftest import REPO

RANGES = TrafficRanges(batch=(1, 32), history=(64, 8192), horizon=(1, 1500), max_context=8192,
                       single_pass_horizon=1024, patch=16, token_budget=65536, variates=(1, 8), samples=(1, 5),
                       options={"cross_learning": (False, True)})


def test_profile_is_seeded_and_covers_every_regime():
    calls = profile(RANGES, 24, seed=3)
    assert calls == profile(RANGES, 24, seed=3) and calls != profile(RANGES, 24, seed=4)
    assert len(calls) == 24 and [c.index for c in calls] == list(range(24))
    assert min(c.batch for c in calls) == 1 and max(c.batch for c in calls) > 8
    assert min(c.history for c in calls) == 64
    assert any(c.history > 8192 for c in calls)  # the upstream truncates these
    assert sum(c.history % 16 != 0 for c in calls) > 12  # mostly not multiples of the patch
    assert min(c.horizon for c in calls) == 1 and any(c.horizon > 1024 for c in calls)
    assert {c.options["cross_learning"] for c in calls} == {False, True}
    assert all(1 <= c.samples <= 5 and 1 <= c.variates <= 8 for c in calls)
    assert all(c.batch * c.history * c.variates * c.samples <= 65536 or c.batch == 1 for c in calls)


def test_compare_counts_nan_against_a_number_as_a_mismatch():
    a = np.array([1.0, 2.0, np.nan, 4.0])
    assert compare(a, a.copy()).within(0.0)
    b = a.copy()
    b[2] = 3.0
    c = compare(b, a)
    assert c.nan_mismatch == 1 and not c.within(1.0)
    assert compare(a[:3], a).shape_ok is False
    d = compare(a * (1 + 1e-7), a)
    assert d.within(1e-6) and not d.within(1e-8)
    rng = np.random.default_rng(0)
    s1, s2 = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    assert compare_distribution(s1, s2, axis=0).rel_l2 < 0.2 < compare(s1, s2).rel_l2


def test_call_label_is_readable():
    assert Call(3, 2, 100, 8, variates=4, samples=2).label() == "#3 b2 h100 H8 v4 s2"


@pytest.fixture
def fixture_env(monkeypatch):
    monkeypatch.setenv("PATCHKIT_EXTRA_PATCHSETS", "tests.traffic_fixture:PATCHSET")
    monkeypatch.setenv("PYTHONPATH", str(REPO))


@pytest.mark.slow
def test_traffic_verify_passes_a_good_patch(tmp_path: Path, fixture_env):
    up = traffic_fixture.write_tree(tmp_path / "up", "upstream")
    pa = traffic_fixture.write_tree(tmp_path / "pa", "patched")
    report, _ = verify_traffic(traffic_fixture.PATCHSET, up, pa, "0", calls=8)
    text = render(report)
    assert report.ok, text
    assert report.upstream.graph_breaks > 0 and "graph_breaks" in report.hazards_shown
    (unit,) = report.patched.units
    assert unit.name == "net" and 1 <= unit.graphs <= 2 and unit.within_budget
    assert report.patched.steady_ok and not report.patched.recompile_limit_hit
    checks = {c.what.split(" (")[0] + (" samples" if "sampled" in c.what else ""): c for c in report.fidelity}
    assert checks["patched eager vs upstream eager"].worst_rel == 0.0  # same arithmetic, same NaN gaps
    assert checks["patched eager vs upstream eager samples"].worst_rel == 0.0  # same seed, same draws
    assert checks["patched compiled vs patched eager"].worst_rel <= 1e-5
    assert report.latency["patched_steady"]["calls"] == 8 and report.parameters == 2
    assert "graphs per compiled unit" in text and "net (forecast): " in text


@pytest.mark.slow
def test_traffic_verify_fails_budget_limit_drift_and_a_vacuous_workload(tmp_path: Path, fixture_env):
    # the "upstream" here is already fixed: it shows no hazard, so the run must not pass vacuously
    up = traffic_fixture.write_tree(tmp_path / "up", "patched")
    bad = traffic_fixture.write_tree(tmp_path / "bad", "bad")
    report, _ = verify_traffic(traffic_fixture.PATCHSET, up, bad, "0", calls=12)
    assert not report.ok
    joined = "\n".join(report.failures)
    assert "workload does not exercise graph_breaks" in joined
    assert "net: " in joined and "budget 2" in joined
    assert "hit the recompile limit" in joined and report.patched.limit_sites
    assert "patched eager vs upstream eager (deterministic outputs): worst relative L2" in joined


def test_compare_scores_one_drifting_element_against_the_output_scale():
    want = np.full((8, 64), 50.0)
    got = want.copy()
    got[3, 10] += 50.0 * 4e-5  # one step of one series: relative L2 dilutes it by sqrt(512)
    c = compare(got, want)
    assert c.rel_l2 < 1e-5 < c.max_scaled
    assert c.max_scaled == pytest.approx(4e-5)


def test_check_reads_every_repeat_and_names_the_pass():
    calls = [{"index": 0}, {"index": 1}]
    want = {"0.point": np.ones((2, 4)), "1.point": np.ones((2, 4))}
    clean = {k: v.copy() for k, v in want.items()}
    drifted = {k: v.copy() for k, v in want.items()}
    drifted["1.point"][1, 3] = 1.001
    c = _check("repeats", 1e-2, [clean, drifted, clean], want, calls, "point", elem_bound=1e-5)
    assert not c.ok and c.calls == 6 and c.worst_elem_call == "#1 (repeat 2)"
    assert c.worst_rel <= c.bound  # relative L2 alone would have passed it
    assert "worst element 0.001 of the output's scale at #1 (repeat 2) > 1e-05" in fidelity_failure(c)
    assert _check("repeats", 1e-2, [clean, clean], want, calls, "point", elem_bound=1e-5).ok


def test_cpu_load_runs_busy_processes_only_inside_its_block():
    from patchkit.verify.load import cpu_load

    with cpu_load(2) as workers:
        assert len(workers) == 2 and all(w.poll() is None for w in workers)  # running
    assert all(w.poll() is not None for w in workers)  # stopped and reaped
    with cpu_load(0) as workers:
        assert workers == []


@pytest.mark.slow
def test_traffic_verify_catches_a_drift_only_the_repeats_see(tmp_path: Path, fixture_env):
    """Compiled output that goes wrong on one element after the first compiled and steady passes, and on a
    loaded CPU: the first compiled pass matches eager, the repeated steady passes catch it per element."""
    up = traffic_fixture.write_tree(tmp_path / "up", "upstream")
    flaky = traffic_fixture.write_tree(tmp_path / "flaky", "flaky")
    report, _ = verify_traffic(traffic_fixture.PATCHSET, up, flaky, "0", calls=8, repeats=2, load=1)
    assert not report.ok and report.repeats == 2 and report.load_procs == 1
    checks = {c.what: c for c in report.fidelity}
    assert checks["patched compiled vs patched eager (deterministic outputs)"].ok
    rep = checks["patched compiled, 2 steady repeats vs patched eager (deterministic outputs)"]
    assert not rep.ok and rep.calls == 16 and rep.worst_elem == pytest.approx(3e-5, rel=0.05), rep
    assert any("worst element" in f and "(repeat" in f for f in report.failures), report.failures
    assert report.patched.steady_ok  # the drift comes with no recompile


def test_break_even_counts_calls_until_compiled_has_cost_less():
    from patchkit.bench import break_even

    eager = [1.0, 1.0, 1.0]
    assert break_even(eager, [0.5, 0.5, 0.5], [0.5] * 3) == 1  # compiled is cheaper from the first call
    # 10 s of compiling on the first call, then 0.5 s a call: 10.5 + 0.5 + 0.5 = 11.5 vs 3 after the profile,
    # 8.5 s behind; each further call gains 0.5 s -> 17 more calls
    assert break_even(eager, [10.5, 0.5, 0.5], [0.5] * 3) == 3 + 17
    assert break_even(eager, [10.5, 0.5, 0.5], [1.0] * 3) is None  # steady no faster: never
    assert break_even(eager, [10.5, 0.5, 0.5], [2.0] * 3) is None


@pytest.mark.slow
def test_bench_traffic_row_cold_then_warm_cache(tmp_path: Path, fixture_env):
    from patchkit.bench import bench_traffic
    from patchkit.render import bench_traffic as render_traffic

    up = traffic_fixture.write_tree(tmp_path / "up", "upstream")
    pa = traffic_fixture.write_tree(tmp_path / "pa", "patched")
    t = bench_traffic(traffic_fixture.PATCHSET, up, pa, calls=6)
    rows = {(r.variant, r.mode): r for r in t.rows}
    loaded_mode = "compiled (empty cache + saved artifact)"
    assert set(rows) == {("upstream", "eager"), ("patched", "eager"), ("patched", "compiled (cold cache)"),
                         ("patched", "compiled (warm cache)"), ("patched", loaded_mode)}
    for r in t.rows:
        assert r.errors == 0 and len(r.per_call_s) == 6 and r.total_s > 0
    cold, warm = rows[("patched", "compiled (cold cache)")], rows[("patched", "compiled (warm cache)")]
    loaded = rows[("patched", loaded_mode)]
    assert cold.graphs == warm.graphs == loaded.graphs == 2 and len(cold.steady_per_call_s) == 6
    # the cold run compiled everything; the new process with an empty inductor cache found it all in the artifact
    assert cold.compile_cache["fxgraph_miss"] >= 2 and cold.compile_cache["fxgraph_hit"] == 0
    assert loaded.compile_cache["fxgraph_hit"] >= 2 and loaded.compile_cache["fxgraph_miss"] == 0
    text = render_traffic(t)
    assert "break-even vs upstream eager" in text and "compiled (warm cache)" in text and "saved artifact" in text


@pytest.mark.parametrize("args,code,words", [
    (["--size", "huge"], 2, "Invalid value for '--size'"),
    (["--weights", "/no/such/dir"], 2, "--weights: '/no/such/dir' is not a directory"),
    (["--mode", "reduce-overhead"], 2, "--mode applies to --traffic runs"),
    (["--traffic", "--device", "cuda"], 3, "not applicable on this machine"),
    (["--traffic", "--mode", "reduce-overhead"], 3, "not applicable on this machine"),
    (["--device", "cuda"], 3, "not applicable on this machine"),
])
def test_verify_bad_input_and_not_applicable_is_one_line(chronos_ws: Path, capsys, args, code, words):
    import torch

    from .conftest import run_cli

    if torch.cuda.is_available() and code == 3:
        pytest.skip("a CUDA device is present: these run for real there")
    got, out, err = run_cli(capsys, "--root", str(chronos_ws), "verify", "chronos2", *args)
    assert got == code, err
    assert words in err and "Traceback" not in err
    assert out == ""  # nothing ran
