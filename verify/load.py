"""CPU load for fidelity checks: busy processes that share the cores with the process under test.

A race in generated code, or a read of memory that no kernel wrote, shows up when threads are descheduled in
the middle of a kernel and allocations are recycled, which is what a shared service host does and an idle test
machine does not.  ``cpu_load(n)`` starts ``n`` processes that each run single-threaded float32 matrix products
and allocate and free buffers of varied sizes until the block exits (or, should the parent die, until their own
deadline passes), so the steady passes that ``verify --traffic --load N`` repeats run on a loaded CPU.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

#: the busy loop of one load process: bounded in time, so it stops by itself if nothing stops it
_WORKER = r"""
import sys, time
import torch
torch.set_num_threads(1)
deadline = time.monotonic() + float(sys.argv[1])
a = torch.randn(384, 384)
n = 0
while time.monotonic() < deadline:
    b = a @ a
    junk = torch.empty(1 + (n * 7919) % 200_000).fill_(float(n % 13))  # recycle allocations of varied sizes
    a = (b / b.norm()).contiguous()
    n += 1
"""


@contextlib.contextmanager
def cpu_load(procs: int, *, max_seconds: float = 3600.0) -> Iterator[list[subprocess.Popen]]:
    """Run ``procs`` CPU-bound worker processes for the duration of the block; yields them."""
    workers: list[subprocess.Popen] = []
    try:
        for _ in range(max(0, procs)):
            workers.append(subprocess.Popen([sys.executable, "-c", _WORKER, str(max_seconds)],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        yield workers
    finally:
        for w in workers:
            w.kill()
        for w in workers:
            w.wait()
