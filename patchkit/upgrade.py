"""Pre-upgrade check: will the patch set survive an upstream release?

For a target version: vendor it into a scratch directory (``vendor/`` is never
touched), dry-run the patch set (each codemod: applied, already fixed upstream,
or drifted), verify upstream vs patched target (breaks, recompiles, new break
sites no codemod covers, forecast drift) and run upstream's own tests against
the patched target.  Verdicts: ``safe`` (exit 0), ``drift`` (exit 4: a codemod
no longer applies), ``regressed`` (exit 1: breaks, recompiles, forecast drift
or upstream test failures).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .apply import plan
from .errors import EXIT_DRIFT, EXIT_OK, EXIT_VERIFY_FAILED
from .patchset import PatchSet
from .vendoring import fetch
from .workspace import write_tree

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StepVerdict:
    codemod: str
    status: str  # applied | already-fixed | drifted | skipped
    files: list[str]
    sites: list[str]
    message: str


@dataclass(frozen=True)
class UpgradeReport:
    schema: int
    model: str
    pinned: str
    target: str
    verdict: str  # safe | drift | regressed
    exit_code: int
    steps: list[StepVerdict]
    verify: dict[str, Any] | None
    uncovered_break_sites: list[dict]
    upstream_tests: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)
    torch_version: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def upgrade_check(
    ps: PatchSet, target: str, *, pinned: str | None = None, archive: Path | None = None, verify: bool = True,
    upstream_tests: bool = True, backend: str = "inductor", tolerance: float | None = None,
    progress: Callable[[str], None] = lambda msg: None,
) -> UpgradeReport:
    from .verify.report import verify_trees
    from .verify.upstream_tests import run_upstream_tests

    with tempfile.TemporaryDirectory(prefix=f"patchkit-upgrade-{ps.model}-") as tmp:
        tmp_path = Path(tmp)
        progress(f"{ps.model} {target}: fetching")
        fetched = fetch(ps, target, tmp_path / "download", archive)
        result = plan(ps, fetched.files, fetched.version)
        steps = [
            StepVerdict(s.codemod, s.status, list(s.files),
                        [f"{o.path}:{x.line}" for o in s.outcomes for x in (o.matches or o.already)], s.message)
            for s in result.steps
        ]
        reasons = [f"codemod {s.codemod!r} drifted: {s.message}" for s in result.drifted]
        upstream_dir, patched_dir = tmp_path / "upstream", tmp_path / "patched"
        write_tree(upstream_dir, fetched.files)
        write_tree(patched_dir, result.files)
        verify_json, uncovered, tests_json, torch_version = None, [], None, ""
        if verify:
            progress(f"{ps.model} {fetched.version}: verifying upstream vs patched")
            report, _ = verify_trees(ps, upstream_dir, patched_dir, fetched.version, backend=backend,
                                     tolerance=tolerance)
            verify_json = report.to_json()
            for variant in ("upstream", "patched"):  # scratch paths mean nothing after the run
                verify_json[variant].pop("tree", None)
            torch_version = report.torch_version
            uncovered = report.patched.break_sites
            reasons += [f"verify: {f}" for f in report.failures]
        if upstream_tests and ps.upstream_tests is not None:
            progress(f"{ps.model} {fetched.version}: running upstream's tests on the patched tree")
            t = run_upstream_tests(patched_dir, ps.upstream_tests)
            tests_json = {k: v for k, v in asdict(t).items() if k not in ("tree",)}
            tests_json["command"] = " ".join(t.command[1:])
            if not t.ok:
                reasons.append(f"upstream tests: {t.failed} failed, {t.errors} errors, {t.passed} passed")
    if result.drifted:
        verdict, code = "drift", EXIT_DRIFT
    elif reasons:
        verdict, code = "regressed", EXIT_VERIFY_FAILED
    else:
        verdict, code = "safe", EXIT_OK
    return UpgradeReport(SCHEMA_VERSION, ps.model, pinned or ps.pin, fetched.version, verdict, code, steps,
                         verify_json, uncovered, tests_json, reasons, torch_version)


# -- rendering -------------------------------------------------------------------
def _counts(r: UpgradeReport, key: str) -> str:
    if not r.verify:
        return "-"
    return f"{r.verify['upstream'][key]} → {r.verify['patched'][key]}"


def _mae(r: UpgradeReport) -> str:
    mae = (r.verify or {}).get("mae")
    return f"{mae['abs_diff']:.1e}" if mae else "-"


def _tests(r: UpgradeReport) -> str:
    t = r.upstream_tests
    if not t:
        return "not run"
    return f"{t['passed']} passed, {t['failed'] + t['errors']} failed" + (f", {t['skipped']} skipped" if t["skipped"] else "")


def render_markdown(r: UpgradeReport) -> str:
    head = {"safe": "safe to upgrade", "drift": "a patch no longer applies", "regressed": "regressions found"}[r.verdict]
    lines = [f"### patchkit upgrade-check: `{r.model}` {r.pinned} → {r.target}: **{r.verdict.upper()}** ({head})", ""]
    if r.torch_version:
        backend = (r.verify or {}).get("analysis_backend", "")
        lines += [f"torch {r.torch_version}, device cpu, analysis backend {backend}", ""]
    lines += ["| codemod | status | sites / what it looked for |", "|---|---|---|"]
    for s in r.steps:
        detail = ", ".join(f"`{x}`" for x in s.sites) if s.sites else s.message
        lines.append(f"| `{s.codemod}` | {s.status} | {detail} |")
    if r.verify:
        v = r.verify
        lines += ["", "| | upstream | patched |", "|---|---|---|"]
        for key, label in (("graph_breaks", "graph breaks"), ("recompiles", "recompiles"), ("graphs", "graphs")):
            lines.append(f"| {label} | {v['upstream'][key]} | {v['patched'][key]} |")
        lines.append(f"| fullgraph=True | {'ok' if v['upstream']['fullgraph_ok'] else 'fails'} | "
                     f"{'ok' if v['patched']['fullgraph_ok'] else 'fails'} |")
        if v.get("mae"):
            m = v["mae"]
            lines.append(f"| scaled MAE (eager / compiled) | {m['upstream_eager']:.5g} | {m['patched_compiled']:.5g} |")
            lines += ["", f"Forecast drift: MAE diff {m['abs_diff']:.2e}, max prediction diff {m['max_abs_pred_diff']:.2e} "
                          f"(tolerance {m['tolerance']:g})."]
    if r.uncovered_break_sites:
        lines += ["", "Break sites no codemod covers:"]
        lines += [f"- `{s['site']}` in `{s['function']}`: {s['reason']} ({s['count']}x)" for s in r.uncovered_break_sites]
    if r.upstream_tests:
        t = r.upstream_tests
        lines += ["", f"Upstream tests on the patched tree: {_tests(r)}."]
        if t["deselected"]:
            lines += [f"- deselected `{k}`: {why}" for k, why in t["deselected"].items()]
        if t["failures"]:
            lines += [f"- failed: `{name}`" for name in t["failures"][:20]]
    if r.reasons:
        lines += ["", "Why:"] + [f"- {x}" for x in r.reasons]
    return "\n".join(lines) + "\n"


def _cell(step: StepVerdict) -> str:
    """``applied model.py:463`` (up to two sites, then a count) so moved code shows in the matrix."""
    if not step.sites:
        return step.status
    shown = [f"{site.rsplit('/', 1)[-1]}" for site in step.sites[:2]]
    more = f" +{len(step.sites) - 2}" if len(step.sites) > 2 else ""
    return f"{step.status} {', '.join(shown)}{more}"


def render_matrix(reports: list[UpgradeReport], markdown: bool = True) -> str:
    codemods = list(dict.fromkeys(s.codemod for r in reports for s in r.steps))
    header = ["version", *codemods, "breaks up→patched", "recompiles up→patched", "fullgraph", "MAE diff",
              "upstream tests", "verdict"]
    rows = []
    for r in reports:
        status = {s.codemod: _cell(s) for s in r.steps}
        fullgraph = "-" if not r.verify else ("ok" if r.verify["patched"]["fullgraph_ok"] else "fails")
        rows.append([r.target[:12], *(status.get(c, "-") for c in codemods), _counts(r, "graph_breaks"),
                     _counts(r, "recompiles"), fullgraph, _mae(r), _tests(r), r.verdict])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header, *rows]) + "\n"


def dump_json(reports: list[UpgradeReport] | UpgradeReport, path: Path) -> None:
    data = [r.to_json() for r in reports] if isinstance(reports, list) else reports.to_json()
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
