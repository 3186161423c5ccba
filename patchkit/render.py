"""Every text and Markdown rendering of a result object, in one place.

The library returns result objects (``api``); the CLI prints them through these functions, and ``report
--markdown`` and ``bench --markdown`` write them.  Nothing here computes a verdict: the checks live with the
results (``verify``, ``bench``, ``upgrade``), so a change of wording never changes an exit code.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING


if TYPE_CHECKING:  # annotations only
    from .bench import AotBench, BenchReport, TrafficBench
    from .scan import ScanResult
    from .upgrade import StepVerdict, UpgradeReport
    from .verify.aot_report import AOTReport
    from .verify.report import VerifyReport
    from .verify.traffic_report import TrafficReport

# -- verify -------------------------------------------------------------------------------------------------


def verify(report: VerifyReport, shown_logs: tuple[str, ...], verbose: bool, raw: dict[str, str]) -> str:
    lines = [f"{report.model} {report.upstream_version} | torch {report.torch_version} | device {report.device} | "
             f"analysis backend {report.analysis_backend}, forecasts inductor",
             f"workload: {report.patched.describe.get('workload', '')}",
             f"weights: {report.patched.describe.get('weights', '')}",
             "",
             f"{'variant':10s} {'breaks':>7s} {'recompiles':>10s} {'graphs':>7s} {'fullgraph':>9s} "
             f"{'steady state':>12s}  limit-hit"]
    for v in (report.upstream, report.patched):
        lines.append(f"{v.label:10s} {v.graph_breaks:7d} {v.recompiles:10d} {v.graphs:7d} "
                     f"{'ok' if v.fullgraph_ok else 'FAIL':>9s} {'ok' if v.steady_state_ok else 'recompiles':>12s}  "
                     f"{'YES' if v.recompile_limit_hit else 'no'}")
    for v in (report.upstream, report.patched):
        if "graph_breaks" in shown_logs and v.break_sites:
            lines.append(f"\n{v.label} graph breaks (TORCH_LOGS=graph_breaks):")
            for s in v.break_sites:
                lines.append(f"  {s['count']:3d}x {s['site']} in {s['function'] or '?'}: {s['reason']}")
        if "recompiles" in shown_logs and v.recompile_sites:
            lines.append(f"\n{v.label} recompiles (TORCH_LOGS=recompiles):")
            for s in v.recompile_sites:
                lines.append(f"  {s['count']:3d}x {s['function']} at {s['site']}: {s['reason']}")
        if not v.fullgraph_ok and v.label == "patched":
            lines.append(f"  fullgraph=True: {v.fullgraph_error}")
    if report.mae is not None:
        m = report.mae
        lines += ["", f"forecast MAE / std(context), mean over {len(m.per_series)} series "
                      f"({sum(r['source'] != 'synthetic' for r in m.per_series)} real):",
                  f"  upstream eager {m.upstream_eager:.6g} | patched compiled {m.patched_compiled:.6g} | "
                  f"diff {m.abs_diff:.3g} | max pred diff {m.max_abs_pred_diff:.3g} (tolerance {m.tolerance:g})"]
    if verbose:
        for label, text in raw.items():
            lines += ["", f"--- {label} stderr ---", text]
    lines.append("")
    lines.append("OK" if report.ok else "FAILED: " + "; ".join(report.failures))
    return "\n".join(lines)


def traffic(report: TrafficReport) -> str:
    r = report
    lines = [f"{r.model} {r.upstream_version[:12]} | size {r.size} ({r.parameters:,} parameters) | torch "
             f"{r.torch_version} | device {r.device} | mode {r.mode}",
             f"traffic: {len(r.calls)} calls, seed {r.seed}: "
             + ", ".join(f"{k} {v[0]}-{v[1]}" for k, v in r.ranges.items()
                         if k in ("batch", "history", "horizon", "variates", "samples") and v[1]),
             ""]
    lines.append(f"{'variant':9s} {'backend':22s} {'breaks':>6s} {'graphs':>6s} {'recompiles':>10s} "
                 f"{'limit hit':>9s} {'steady':>7s}")
    for v in (r.upstream, r.patched):
        steady = "n/a" if v.steady is None else ("ok" if v.steady_ok else "FAIL")
        lines.append(f"{v.label:9s} {v.backend:22s} {v.graph_breaks:6d} {v.graphs:6d} {v.recompiles:10d} "
                     f"{'YES' if v.recompile_limit_hit else 'no':>9s} {steady:>7s}")
    lines.append("")
    lines.append("graphs per compiled unit (patched):")
    for u in r.patched.units:
        phases = f" ({', '.join(u.phases)})" if u.phases else ""
        lines.append(f"  {u.name}{phases}: {u.graphs} / budget {u.budget}{'' if u.within_budget else '  OVER'}")
    if r.patched.eager_when_calls:
        lines.append(f"  {r.patched.eager_when_calls} compiled-pass call(s) ran the compiled module's eager code "
                     "by design (eager-when): no graph, upstream's eager values")
    for v in (r.upstream, r.patched):
        for s in v.recompile_sites[:6]:
            lines.append(f"  {v.label} recompile {s['count']}x {s['function']} at {s['site']}: {s['reason']}")
        for s in v.limit_sites:
            lines.append(f"  {v.label} RECOMPILE LIMIT {s['function']} at {s['site']}: last {s['reason']}")
    lines.append("")
    lines.append("fidelity (relative L2 per call and worst element over the output's scale, worst call; "
                 "NaN positions must match):")
    for c in r.fidelity:
        elem = "" if c.elem_bound is None else (f"; element {c.worst_elem:.2e} at {c.worst_elem_call} "
                                                f"(bound {c.elem_bound:g})")
        lines.append(f"  {'ok  ' if c.ok else 'FAIL'} {c.what}: {c.worst_rel:.2e} at {c.worst_call} "
                     f"(bound {c.bound:g}, {c.calls} calls){elem}")
    if r.repeats:
        lines.append(f"  steady pass repeated {r.repeats}x over the eager data"
                     + (f", beside {r.load_procs} busy process(es)" if r.load_procs else ""))
    lat = r.latency

    def ms(d, key="p50_s"):
        return "-" if not d or d.get(key) is None or not math.isfinite(d.get(key)) else f"{d[key] * 1000:.1f}"

    lines += ["", "latency per call, ms (p50 / p95):",
              f"  upstream eager {ms(lat['upstream_eager'])} / {ms(lat['upstream_eager'], 'p95_s')}"
              f" | patched eager {ms(lat['patched_eager'])} / {ms(lat['patched_eager'], 'p95_s')}"
              f" | patched compiled, steady {ms(lat['patched_steady'])} / {ms(lat['patched_steady'], 'p95_s')}",
              f"  first (cold) compiled pass: {(lat['patched_compiled_cold'].get('wall_s') or 0):.1f} s for "
              f"{len(r.calls)} calls, compile included"]
    lines += ["", "hazard shown by upstream: " + (", ".join(r.hazards_shown) or "none")
              + f" (claimed: {', '.join(r.hazards_claimed) or 'none'})", ""]
    lines.append("OK" if r.ok else "FAILED: " + "; ".join(r.failures))
    return "\n".join(lines)


def aot(r: AOTReport) -> str:
    lines = [f"{r.model} {r.upstream_version[:12]} | package {r.package} | patch set {r.patch_hash} | size {r.size} "
             f"({r.parameters:,} parameters) | torch {r.torch_version} | device {r.device}"]
    for name, prog in r.programs.items():
        ranges = ", ".join(f"{k} {lo}..{hi}" for k, (lo, hi) in prog["ranges"].items())
        fixed = ", ".join(f"{k} = {v}" for k, v in prog["static"].items())
        lines.append(f"  program {name}: {ranges}{'; ' + fixed if fixed else ''}")
    lines.append(f"{len(r.calls)} calls through the upstream entry point; package loaded in {r.load_s:.2f} s; "
                 f"Dynamo graphs in the package's process: {r.dynamo.get('graphs', 0)}")
    lines.append("program calls: " + ", ".join(f"{k} {v}" for k, v in r.program_calls.items()))
    if r.refused:
        lines.append(f"refused as outside the package's ranges: {len(r.refused)} of {len(r.calls)} calls "
                     "(not compared; upstream accepts them)")
        from .verify.aot_report import REFUSED  # loaded already: r came from it

        lines += [f"  {e['call']}: {e['error'].removeprefix(REFUSED + ': ')}" for e in r.refused[:5]]
    up, pk = r.latency["upstream_eager"], r.latency["package"]
    if pk["calls"]:
        lines.append(f"latency p50: package {pk['p50_s'] * 1e3:.1f} ms, upstream eager {up['p50_s'] * 1e3:.1f} ms")
    for c in r.fidelity:
        lines.append(f"  {'ok  ' if c.ok else 'FAIL'} {c.what}: worst {c.worst_rel:.2g} (bound {c.bound:g}) over "
                     f"{c.calls} calls")
    lines.append("")
    lines.append("OK" if r.ok else "FAILED:\n" + "\n".join(f"  - {f}" for f in r.failures))
    return "\n".join(lines)



# -- bench --------------------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    """One table's lines: Markdown, or plain columns padded to their widest cell."""
    if markdown:
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |"
                                                                                for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]


def bench(rep: BenchReport, markdown: bool = False) -> str:
    header = ["variant", "mode", "dtype", "first call s", "median ms", "IQR ms", "graphs", "breaks",
              "recompiles", "peak MB", "MAE diff"]
    rows = []
    for r in rep.rows:
        mode = r.mode + (" (warm cache)" if r.warm_start else "")
        if r.status != "ok":
            rows.append([r.variant, mode, r.dtype, r.status, r.note[:60], "", "", "", "", "", ""])
            continue
        rows.append([r.variant, mode, r.dtype, f"{r.first_call_s:.2f}", f"{r.median_s * 1000:.1f}",
                     f"{r.spread_s * 1000:.1f}", str(r.graphs), str(r.graph_breaks), str(r.recompiles),
                     f"{r.peak_mem_mb:.0f}", "-" if r.mae_diff is None else f"{r.mae_diff:.1e}"])
    params = f" ({rep.parameters:,} parameters)" if rep.parameters else ""
    title = (f"{rep.model} {rep.upstream_version[:12]} | size {rep.size}{params} | torch {rep.torch_version} | "
             f"device {rep.device} | batch {rep.batch} | {rep.runs} timed runs | {rep.date}")
    if markdown:
        return "\n".join([title, "", *table(header, rows, True)]) + "\n"
    return "\n".join([title, *table(header, rows, False), *rep.notes]) + "\n"


def bench_traffic(t: TrafficBench, markdown: bool = False) -> str:
    header = ["variant", "mode", f"profile total s ({t.calls} calls)", "steady p50 ms", "graphs", "errors"]
    rows = [[r.variant, r.mode, f"{r.total_s:.1f}", "-" if r.steady_p50_s is None else f"{r.steady_p50_s * 1000:.1f}",
             "-" if r.graphs is None else str(r.graphs), str(r.errors)] for r in t.rows]

    def fmt(n: int | None) -> str:
        return "never" if n is None else str(n)

    tail = [f"break-even vs upstream eager: cold {fmt(t.break_even_cold)} calls, warm {fmt(t.break_even_warm)} calls, "
            f"saved artifact {fmt(t.break_even_artifact)} calls; "
            f"vs patched eager: cold {fmt(t.break_even_cold_vs_patched_eager)}, "
            f"warm {fmt(t.break_even_warm_vs_patched_eager)}", t.note]
    return "\n".join(table(header, rows, markdown) + ([""] if markdown else []) + tail) + "\n"


def bench_aot(b: AotBench, markdown: bool = False) -> str:
    f = b.fresh
    head = (f"{b.model} size {b.size} ({b.parameters:,} parameters), torch {b.torch_version}, {b.device}, {b.date}; "
            f"package {b.package_mb:.0f} MB, exported in "
            + ", ".join(f"{n} {s:.0f} s" for n, s in b.export_s.items()))
    setup = "".join(f", {k.removesuffix('_s').replace('_', ' ')} {v:.2f} s" for k, v in f.get("setup", {}).items())
    fresh = [["aot-load", f"{f['load_s']:.2f}", f"{f['start_to_loaded_s']:.2f}", "load_package: record check, "
              "every program loaded"],
             ["first forecast", f"{f['first_forecast_s']:.2f}", f"{f['start_to_first_forecast_s']:.2f}",
              f"right after loading, upstream entry point; Dynamo graphs {f['graphs']}{setup}"]]
    header = ["row", "s", "s from process start", "what"]
    t_header = ["traffic", "calls run", "p50 ms", "p95 ms", "total s", "graphs", "errors", "refused (outside ranges)"]
    t_rows = [[r.name, str(r.calls), f"{r.p50_s * 1e3:.1f}", f"{r.p95_s * 1e3:.1f}", f"{r.total_s:.2f}",
               "-" if r.graphs is None else str(r.graphs), str(r.errors), str(r.refused)] for r in b.rows]
    out = [head, ""] + table(header, fresh, markdown)
    if b.rows:
        out += ["", f"traffic profile (seed {b.seed}) through the upstream entry point, each variant in its own "
                    "process; package total excludes its load"] + table(t_header, t_rows, markdown)
    return "\n".join(out) + "\n"



# -- upgrade-check ------------------------------------------------------------------------------------------


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
    p = t["patched"]
    out = f"{p['passed']} passed, {len(t['regressions'])} regressed"
    base = sum(len(v) for v in t["baseline_failures"].values())
    if base:
        out += f", {base} fail on pristine too"
    return out


def upgrade(r: UpgradeReport) -> str:
    head = {"safe": "safe to upgrade", "safe-with-baseline-failures": "safe to upgrade; some upstream tests fail "
            "without the patch too", "drift": "a patch no longer applies", "regressed": "regressions found",
            "environment": "the target does not run in this environment"}[r.verdict]
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
    lines += ["", f"Environment: {r.environment}; {r.seconds:.0f} s."]
    if r.dependency_conflicts:
        lines += ["", "The target's own requirements this environment does not meet:"]
        lines += [f"- {c}" for c in r.dependency_conflicts]
    if r.environment_problems:
        lines += [""] + [f"- {x}" for x in r.environment_problems]
    if r.upstream_tests:
        t = r.upstream_tests
        pr, pa = t["pristine"], t["patched"]
        lines += ["", "Upstream tests, test by test (a regression passes on pristine and fails on patched):", "",
                  "| | pristine | patched |", "|---|---|---|"]
        for key in ("passed", "failed", "errors", "skipped"):
            lines.append(f"| {key} | {pr[key]} | {pa[key]} |")
        if pa["deselected"]:
            lines += [""] + [f"- deselected `{k}`: {why}" for k, why in pa["deselected"].items()]
        if t["regressions"]:
            lines += ["", "Regressions:"] + [f"- `{name}`: {cause}" for name, cause in list(t["regressions"].items())[:30]]
        if t["baseline_failures"]:
            lines += ["", "Failing on the pristine target too (not caused by the patch), by first error line:"]
            for cause, names in t["baseline_failures"].items():
                shown = ", ".join(f"`{n.rsplit('::', 1)[-1]}`" for n in names[:3])
                more = f" +{len(names) - 3}" if len(names) > 3 else ""
                lines.append(f"- {len(names)} × `{cause}`: {shown}{more}")
        if t["fixed"]:
            lines += ["", f"Failing on pristine, passing on patched: {len(t['fixed'])}."]
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


def upgrade_matrix(reports: list[UpgradeReport], markdown: bool = True) -> str:
    codemods = list(dict.fromkeys(s.codemod for r in reports for s in r.steps))
    header = ["version", *codemods, "breaks up→patched", "recompiles up→patched", "fullgraph", "MAE diff",
              "upstream tests", "requirement conflicts", "environment", "time", "verdict"]
    rows = []
    for r in reports:
        status = {s.codemod: _cell(s) for s in r.steps}
        fullgraph = "-" if not r.verify else ("ok" if r.verify["patched"]["fullgraph_ok"] else "fails")
        rows.append([r.target[:12], *(status.get(c, "-") for c in codemods), _counts(r, "graph_breaks"),
                     _counts(r, "recompiles"), fullgraph, _mae(r), _tests(r), str(len(r.dependency_conflicts)),
                     r.environment, f"{r.seconds:.0f} s", r.verdict])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [header, *rows]) + "\n"


# -- scan -------------------------------------------------------------------------------------------------------
def scan(r: ScanResult, markdown: bool = False) -> str:
    """The static scan: a count per kind, then one row per site with the codemod that removes its kind."""
    counts = ", ".join(f"{n} {k}" for k, n in r.by_kind().items() if n) or "no hazard a matcher sees"
    lines = [f"{r.root}: {r.files} Python files scanned ({r.skipped} test files skipped): {counts}"]
    if r.findings:
        rows = [[f"{f.path}:{f.line}", f.kind, f.function, f.construct, f.codemod or "no codemod"]
                for f in r.findings]
        lines += [""] + table(["site", "kind", "function", "construct", "codemod"], rows, markdown)
    fixable = sum(1 for f in r.findings if f.codemod)
    if r.findings:
        lines += ["", f"{fixable} of {len(r.findings)} sites have a codemod for their kind; a patch set names the "
                      "sites and options (docs/codemods.md). A static finding is a candidate: "
                      "`patchkit verify MODEL --traffic --logs graph_breaks,recompiles` shows what Dynamo makes of it."]
    return "\n".join(lines) + "\n"


def dynamic_scan(r, markdown: bool = False) -> str:
    """The dynamic scan (``patchkit.dynamic_scan.DynamicScan``): a count per kind, one row per hazard with its
    calls and codemod, graphs per compiled unit against the patch set's budget, and the static findings it
    confirmed."""
    counts = ", ".join(f"{n} {k}" for k, n in r.by_kind().items() if n) or "no hazard"
    units = ", ".join(f"{u} {n}" + (f"/{r.graph_budget[u]}" if u in r.graph_budget else "")
                      for u, n in sorted(r.unit_graphs.items())) or "none compiled"
    lines = [f"{r.model} ({r.variant} tree, size {r.size}, {r.calls} traffic calls, seed {r.seed}, torch "
             f"{r.torch_version}, Dynamo's eager backend): {counts}",
             f"graphs per compiled unit (budget): {units}"]
    if r.hazards:
        def calls(h) -> str:
            shown = ", ".join(f"#{c}" for c in h.calls[:6])
            return shown + (f" (+{len(h.calls) - 6})" if len(h.calls) > 6 else "")

        rows = [[h.kind, h.site + (f" (+{len(h.sites) - 1} sites)" if len(h.sites) > 1 else ""), h.function,
                 calls(h) or "-", str(h.count), " ".join(h.detail.split())[:90], h.codemod or "no codemod"]
                for h in r.hazards]
        lines += [""] + table(["kind", "site", "function", "calls", "times", "Dynamo says", "codemod"], rows,
                              markdown)
    if r.within_budget:
        lines += ["", "every compiled unit is within its graph budget, with no break and no limit hit"
                  + (": the recompiles listed are the graph classes the patch set budgets for" if r.hazards else "")]
    if r.confirmed:
        lines += ["", f"confirmed {len(r.confirmed)} of {r.static_findings} static findings "
                      "(`patchkit scan --static` over the same tree):"]
        lines += [f"  {f.path}:{f.line} {f.kind} ({f.codemod or 'no codemod'})" for f in r.confirmed]
    elif r.static_findings:
        lines += ["", f"none of the {r.static_findings} static findings showed on this profile"]
    return "\n".join(lines) + "\n"
