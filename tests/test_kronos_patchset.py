"""The Kronos patch set applied to the Kronos-shaped fixture repository, and its harness.

Each model run happens in a subprocess whose ``sys.path`` starts with one tree
(pristine or patched), the way verify runs harnesses: both trees provide the
same top-level package ``model``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from patchkit.apply import plan as apply_plan
from patchkit.gitsource import export_tree
from patchkit.patches.kronos import PATCHSET
from patchkit.patches.kronos.harness import ohlcv_from_close, synthetic_ohlcv_series

from .kronos_repo import make_kronos_repo

HAS_CUDA = False
try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    pass


def _apply(tree: Path) -> list[str]:
    """Run the patch set over ``tree`` in place, as apply plans it (runtime helpers included); the sites, as text."""
    files = {p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    result = apply_plan(PATCHSET, files, "test")
    assert not result.drifted, [s.codemod for s in result.drifted]
    for rel in result.changed:
        (tree / rel).write_bytes(result.files[rel])
    return [f"{s.codemod} {o.path} {site}" for s in result.steps for o in s.outcomes for site in o.matches]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("kronos-trees")
    repo = make_kronos_repo(root / "repo")
    out = {}
    for i, sha in enumerate(repo.commits):
        pristine = root / f"c{i}" / "upstream"
        export_tree(str(repo.path), sha, PATCHSET.source.include, PATCHSET.source.exclude, pristine)
        patched = root / f"c{i}" / "patched"
        shutil.copytree(pristine, patched)
        out[i] = (pristine, patched, _apply(patched))
    return out


def _run(tree: Path, body: str, timeout: int = 600) -> dict:
    script = "import sys, json\nsys.path.insert(0, %r)\n" % str(tree) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_patchset_schema() -> None:
    assert PATCHSET.model == "kronos" and PATCHSET.provides == ("model",)
    assert PATCHSET.pin in PATCHSET.known_versions and len(PATCHSET.pin) == 40
    assert PATCHSET.source.include == (("model/", "model/"),)
    assert [s.codemod for s in PATCHSET.steps] == ["rope-static-cache", "cudagraph-step", "contiguous-step-inputs",
                                                   "dynamic-step-inputs", "step-cache"]


@pytest.mark.parametrize("which", [0, 1])
def test_applies_to_both_commits_and_is_idempotent(trees, which: int) -> None:
    pristine, patched, report = trees[which]
    # 1 rope site, mark-step + clone, 2 contiguous arguments, 5 step inputs marked dynamic (3 to decode_s1, 2 to
    # decode_s2), 2 step calls routed through the decode cache
    assert len(report) == 12, report
    module = (patched / "model/module.py").read_bytes()
    assert module.count(b"\r\n") == module.count(b"\n")
    # eager keeps upstream's cache; compiled code computes the table per call
    assert b"if torch.compiler.is_compiling():\r\n            return self._compute_cos_sin(" in module
    kronos = (patched / "model/kronos.py").read_bytes()
    assert b"torch.compiler.cudagraph_mark_step_begin()" in kronos
    assert b"_kv = _PatchkitDecodeCache(model, max_context)" in kronos and b"class _PatchkitDecodeCache:" in kronos
    before = {p: p.read_bytes() for p in patched.rglob("*.py")}
    assert _apply(patched) == []
    assert before == {p: p.read_bytes() for p in patched.rglob("*.py")}


def test_ohlcv_series_shapes() -> None:
    series = synthetic_ohlcv_series(40, 8)
    assert all(s.context.shape == (40, 6) and s.truth.shape == (8, 6) for s in series)
    bars = ohlcv_from_close(np.linspace(10, 20, 50), 0)
    assert (bars[:, 1] >= bars[:, [0, 3]].max(1)).all() and (bars[:, 2] <= bars[:, [0, 3]].min(1)).all()
    assert np.all(ohlcv_from_close(np.full(10, 7.0), 0)[:, :4] == 7.0)


_EAGER = """
import numpy as np
from patchkit.patches.kronos.harness import KronosHarness, synthetic_ohlcv_series
from patchkit.verify.harness import eager
h = KronosHarness(sys.path[0])
h.workload(eager)
series = synthetic_ohlcv_series(48, 8)
preds = h.forecast(series, eager)
print(json.dumps({"shapes": [list(p.shape) for p in preds], "preds": [p.tolist() for p in preds],
                  "describe": h.describe()}))
"""


def test_eager_forecasts_unchanged(trees) -> None:
    pristine, patched, _ = trees[1]
    a = _run(pristine, _EAGER)
    b = _run(patched, _EAGER)
    assert a["shapes"] == [[8, 6]] * len(a["shapes"])
    np.testing.assert_array_equal(np.array(a["preds"]), np.array(b["preds"]))
    assert "decode_s1" in a["describe"]["compiled"]


_DECODE = """
import numpy as np, torch
from patchkit.patches.kronos.harness import MODEL_CONFIG, TOKENIZER_CONFIG
from model.kronos import Kronos, KronosTokenizer, auto_regressive_inference
torch.manual_seed(0)
tok, model = KronosTokenizer(**TOKENIZER_CONFIG).eval(), Kronos(**MODEL_CONFIG).eval()
calls = {"decode_s1": 0, "decode_s2": 0}
for name in calls:  # count the model's own decode calls: the cache answers the rest itself
    def counted(*a, _f=getattr(model, name), _n=name, **k):
        calls[_n] += 1
        return _f(*a, **k)
    setattr(model, name, counted)
out = {}
# lookback below, at and above max_context (24); 16 steps from 12 cross into the rolling window
for lookback, samples, top_k in ((12, 1, 1), (12, 5, 0), (20, 3, 0), (24, 2, 0), (30, 1, 1)):
    g = torch.Generator().manual_seed(lookback)
    x = torch.randn(2, lookback, 6, generator=g).cumsum(1) * 0.1
    stamp = torch.randint(0, 7, (2, lookback + 16, 5), generator=g).float()
    torch.manual_seed(7)  # top-p paths: the same seed must give the same draws
    preds = auto_regressive_inference(tok, model, x, stamp[:, :lookback], stamp[:, lookback:], 24, 16,
                                      T=1.0, top_k=top_k, top_p=0.9, sample_count=samples)
    out[f"{lookback}/{samples}"] = np.asarray(preds).tolist()
print(json.dumps({"preds": out, "calls": calls}))
"""


def test_decode_cache_gives_upstream_paths(trees) -> None:
    """step-cache: the same forecasts, bit for bit, with greedy and seeded top-p paths, for look-backs below, at
    and above max_context and sample_count 1 to 5; the model's own decode calls run only where the window rolls."""
    pristine, patched, _ = trees[1]
    up = _run(pristine, _DECODE)
    pt = _run(patched, _DECODE)
    assert up["preds"].keys() == pt["preds"].keys()
    for key in up["preds"]:
        np.testing.assert_array_equal(np.array(up["preds"][key]), np.array(pt["preds"][key]), err_msg=key)
    assert up["calls"] == {"decode_s1": 80, "decode_s2": 80}  # every step runs the whole window upstream
    # patched: the cache answers every step while the window grows (lookback L: 24 - L + 1 steps, at least the
    # first, prefill, step); once it rolls, every step is the model's own full recompute, as upstream
    rolled = sum(16 - max(1, 24 - lookback + 1) for lookback in (12, 12, 20, 24, 30))
    assert rolled == 47 and pt["calls"] == {"decode_s1": rolled, "decode_s2": rolled}, pt["calls"]


_COMPILED = """
import logging
import torch, torch._dynamo.utils as du
from patchkit.patches.kronos.harness import KronosHarness
msgs = []
class H(logging.Handler):
    def emit(self, record):
        msgs.append(record.getMessage())
logging.getLogger("torch._dynamo").addHandler(H())
torch._logging.set_logs(recompiles=True)
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
h = KronosHarness(sys.path[0])
torch._dynamo.reset(); du.counters.clear()
h.workload(lambda f: torch.compile(f, backend=BACKEND))
from model.kronos import Kronos
print(json.dumps({
    "breaks": sum(du.counters["graph_break"].values()),
    "limit": any("recompile_limit" in m for m in msgs),
    "recompiles": sum("Recompiling function" in m for m in msgs),
    "entries": {n: len(_debug_get_cache_entry_list(getattr(Kronos, n).__code__)) for n in ("decode_s1", "decode_s2")},
}))
"""


@pytest.mark.slow
def test_compiled_workload_upstream_vs_patched(trees) -> None:
    """Dynamo only (backend="eager"): the guards and recompiles are Dynamo's, inductor adds minutes."""
    pristine, patched, _ = trees[1]
    body = _COMPILED.replace("BACKEND", repr("eager"))
    up = _run(pristine, body)
    pt = _run(patched, body)
    assert up["limit"], up  # the hazard: one recompile per window length until the limit
    # dynamic from the first call (dynamic-step-inputs): one graph per decode function, no recompile
    assert pt == {"breaks": 0, "limit": False, "recompiles": 0, "entries": {"decode_s1": 1, "decode_s2": 1}}, pt


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA (reduce-overhead / CUDA graphs)")
def test_reduce_overhead_on_cuda(trees) -> None:
    _, patched, _ = trees[1]
    body = """
    import numpy as np, torch
    from patchkit.patches.kronos.harness import KronosHarness, synthetic_ohlcv_series
    from patchkit.verify.harness import eager
    h = KronosHarness(sys.path[0], device="cuda")
    ro = lambda f: torch.compile(f, mode="reduce-overhead")
    h.workload(ro)  # decode_s1/decode_s2 and, through patchkit_step_compiler, the decode cache's static steps
    series = synthetic_ohlcv_series(48, 8)
    a = h.forecast(series, eager)
    diffs = []
    for _ in range(5):  # five consecutive compiled predictions: each must run and match eager
        b = h.forecast(series, ro)
        diffs.append(max(float(np.nanmax(np.abs(x - y)) / (np.nanmax(np.abs(x)) + 1e-12)) for x, y in zip(a, b)))
    print(json.dumps({"max_rel_diff": diffs}))
    """
    out = _run(patched, body)
    assert len(out["max_rel_diff"]) == 5 and max(out["max_rel_diff"]) < 1e-3, out
