"""What the Toto harness's workload must exercise (the contract every patch set keeps: tests/test_patchsets.py)."""

from __future__ import annotations

from patchkit.patches.toto.harness import TotoHarness


def test_workload_drives_sixteen_decode_steps_and_two_horizons() -> None:
    stride = 8
    assert len(set(TotoHarness.workload_horizons)) >= 2
    assert max(TotoHarness.workload_horizons) // stride - 1 >= 16
