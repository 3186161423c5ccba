"""``verify --aot``'s accounting, on recorded runner results (no export, no subprocess).

A call the runtime refuses as outside the package's exported ranges (``OutsideRange``) is listed, left out
of the comparison and of the latency, and does not fail the check; any other exception does, and so does a
package that refuses every call (nothing was compared).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchkit import patches
from patchkit.errors import OutsideRange
from patchkit.verify import aot_report
from patchkit import render
from patchkit.verify.runner import _one_line
from patchkit.verify.traffic_report import TrafficRun

CALLS = [{"index": i, "batch": 1, "history": h, "horizon": 8, "variates": 1, "samples": 1, "options": {}}
         for i, h in enumerate((64, 200, 300))]


def _recorded(package_errors: list[dict], drift: float = 0.0):
    """A fake ``run_traffic``: upstream eager answers every call; the package raises ``package_errors``."""
    failed = {e["index"] for e in package_errors}
    out = {i: np.linspace(1.0, 2.0, 8) * (i + 1) for i in range(len(CALLS))}

    def run(ps, tree, label, passes, **kwargs):
        if passes == "eager":
            data = {"calls": CALLS, "passes": {"eager": {"times_s": [1.0, 2.0, 3.0], "errors": []}},
                    "parameters": 10, "torch_version": "t"}
            return TrafficRun(data, {"eager": {f"{i}.point": a for i, a in out.items()}}, "")
        arrays = {f"{i}.point": a * (1 + drift) for i, a in out.items() if i not in failed}
        times = [float("nan") if i in failed else 0.5 for i in range(len(CALLS))]
        data = {"calls": CALLS, "parameters": 10, "torch_version": "t", "aot_counters": {"graphs": 0},
                "passes": {"aot": {"times_s": times, "errors": package_errors, "load_s": 0.1,
                                   "program_calls": {"main": 3 - len(failed)}}}}
        return TrafficRun(data, {"aot": arrays}, "")

    return run


def _verify(monkeypatch, errors: list[dict], drift: float = 0.0):
    monkeypatch.setattr(aot_report, "run_traffic", _recorded(errors, drift))
    record = {"size": "tiny", "device": "cpu", "upstream": {"version": "1"}, "patch_hash": "abc", "programs": {}}
    report, _ = aot_report.verify_aot(patches.get("chronos2"), Path("up"), Path("pa"), Path("p.pt2"),
                                      patch_hash="abc", record=record, calls=3)
    return report


def _error(index: int, err: BaseException) -> dict:
    return {"index": index, "call": f"#{index}", "error": _one_line(err)}


def test_a_call_outside_the_ranges_is_refused_not_failed(monkeypatch):
    report = _verify(monkeypatch, [_error(0, OutsideRange("a series of 64 steps is outside the package's range"))])
    assert report.ok, report.failures
    assert [e["index"] for e in report.refused] == [0] and report.call_errors == []
    (check,) = report.fidelity
    assert check.calls == 2 and check.worst_rel == 0.0
    assert report.latency["upstream_eager"]["calls"] == 2  # the refused call's eager time is not compared
    assert "refused as outside the package's ranges: 1 of 3 calls" in render.aot(report)


@pytest.mark.parametrize("err", [ValueError("outside the package's range"), RuntimeError("boom")])
def test_any_other_exception_fails(monkeypatch, err):
    report = _verify(monkeypatch, [_error(1, err)])
    assert not report.ok and report.refused == []
    assert any("package call #1 raised" in f for f in report.failures)


def test_every_call_refused_is_a_failure_and_drift_still_counts(monkeypatch):
    report = _verify(monkeypatch, [_error(i, OutsideRange("outside")) for i in range(3)])
    assert not report.ok and any("no output to compare" in f for f in report.failures)
    report = _verify(monkeypatch, [_error(0, OutsideRange("outside"))], drift=1e-3)
    assert not report.ok and any("worst relative L2" in f for f in report.failures)
