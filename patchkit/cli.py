"""``patchkit`` command line: a thin click layer over ``patchkit.api``.

This is the only module that prints for people and turns errors into exit
codes (see ``patchkit.errors``).  Errors are one line on stderr; ``--verbose``
adds the traceback.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import click

from . import api, errors, render, upgrade
from . import bench as bench_mod
from .compile_cache import cache_dir

EXIT_CODES_HELP = """\b
Exit codes:
  0   success
  1   verification failed (breaks/recompiles remain, forecasts drifted,
      --check found the tree out of date)
  2   bad input (unknown model/version, corrupt or unsafe archive,
      a vendored file edited by hand, build/install of an unapplied
      patch set, install after a failed verify without --force)
  3   environment (no network, missing package or tool, pip failed)
  4   upstream drift (a codemod no longer matches its upstream)
  70  internal error (the message names a log with the traceback;
      patchkit -v COMMAND shows it)
  130 interrupted (Ctrl-C, SIGTERM)
"""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


@dataclass
class Options:
    root: Path
    verbose: bool
    quiet: bool = False

    def progress(self):
        """Progress lines on stderr (``... step (12 s)``) when it is a terminal and not ``--quiet``, as pip does."""
        if self.quiet or not sys.stderr.isatty():
            return lambda msg: None
        started = time.monotonic()
        return lambda msg: click.echo(f"... {msg} ({time.monotonic() - started:.0f} s)", err=True)

    def notes(self, prefix: str = "... "):
        """Progress lines of the long-running commands that always showed them (bench, build, install, cache
        warm, upgrade-check): on stderr unless ``--quiet``."""
        if self.quiet:
            return lambda msg: None
        return lambda msg: click.echo(f"{prefix}{msg}", err=True)


def _echo_err(msg: str) -> None:
    text = " ".join(x.strip() for x in str(msg).splitlines() if x.strip())
    if len(text) > 1000:
        text = text[:1000] + "..."
    click.echo(f"patchkit: error: {text}", err=True)


class _Boundary(click.Group):
    """Turns an interrupt inside any command into ``errors.Interrupted`` before click makes it an ``Abort``
    (and prints a blank line)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            raise errors.Interrupted("interrupted") from err


@click.group(cls=_Boundary, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True,
              envvar="PATCHKIT_ROOT", help="Workspace holding vendor/ (locks and vendored trees).")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and subprocess logs (also after the command).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines (they show only on a terminal anyway).")
@click.version_option(package_name="patchkit")
@click.pass_context
def cli(ctx: click.Context, root: Path, verbose: bool, quiet: bool) -> None:
    """Make upstream time-series model repos torch.compile-clean, and prove it.

    \b
    Typical session:
      patchkit vendor chronos2        # fetch the pinned upstream, write the lock
      patchkit apply chronos2         # run the codemods into vendor/chronos2
      patchkit verify chronos2 --logs graph_breaks
    """
    ctx.obj = Options(root=root.resolve(), verbose=verbose, quiet=quiet)


@cli.command("list")
@click.option("--names", is_flag=True, help="Print model names only, one per line (for scripts).")
@click.pass_obj
def list_cmd(opts: Options, names: bool) -> None:
    """List the registered models, their pins and codemods.

    \b
    Examples:
      patchkit list
      patchkit list --names
    """
    for ps in api.list_models():
        if names:
            click.echo(ps.model)
            continue
        lock = api.workspace(opts.root).read_lock(ps.model)
        state = f"vendored {lock['version']}" if lock else "not vendored"
        click.echo(f"{ps.model:10s} {ps.title}")
        click.echo(f"{'':10s} pin {ps.pin} ({state}); codemods: {', '.join(dict.fromkeys(s.codemod for s in ps.steps))}")


@cli.command()
@click.argument("model")
@click.option("--version", "version", help="Upstream version (pip) or commit/ref (git); default: the pin.")
@click.option("--archive", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use this local sdist/wheel instead of downloading (git models: a local repository path).")
@click.option("--from", "from_", help="git models: clone/open this URL or path instead of the default.")
@click.option("--ref", help="git models: commit or ref (same as --version).")
@click.option("--refresh", is_flag=True, help="Fetch again although the lock and the pristine tree already match "
                                              "(without it, a re-run of the locked version is a no-op, offline).")
@click.pass_obj
def vendor(opts: Options, model: str, version: str | None, archive: Path | None, from_: str | None,
           ref: str | None, refresh: bool) -> None:
    """Fetch MODEL's upstream at its pinned version into vendor/.pristine/MODEL and lock it.

    \b
    Examples:
      patchkit vendor chronos2
      patchkit vendor chronos2 --version 2.3.0
      patchkit vendor kronos --from ~/src/Kronos --ref 67b630e
    """
    r = api.vendor(model, ref or version, root=opts.root, archive=from_ or archive, refresh=refresh)
    verb = "already vendored" if r.unchanged else "vendored"
    digest = f" (sha256 {r.archive_sha256[:12]}...)" if r.archive_sha256 else ""
    click.echo(f"{verb} {r.model} {r.version}: {r.files} files from {r.source}{digest} "
               f"-> {_rel(r.pristine, opts.root)}; lock {_rel(r.lock, opts.root)}")


@cli.command()
@click.argument("target")
@click.option("--static", "static", is_flag=True,
              help="Read the source with LibCST (no model is run): the hazards a matcher can see. TARGET may then "
              "be any source folder.")
@click.option("--patched", is_flag=True, help="TARGET is a model: scan its patched tree, not the pristine one.")
@click.option("--size", type=click.Choice(["tiny", "real"]), default="tiny", show_default=True,
              help="Dynamic pass: the model size the profile runs at.")
@click.option("--calls", type=int, default=12, show_default=True, help="Dynamic pass: traffic calls to run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Dynamic pass: the traffic profile's seed.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the findings "
              "as JSON here.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the table as Markdown here.")
@click.pass_obj
def scan(opts: Options, target: str, static: bool, patched: bool, size: str, calls: int, seed: int,
         json_path: Path | None, md_path: Path | None) -> None:
    """Find torch.compile hazards in TARGET: a registered model's vendored tree, or (with --static) any folder.

    Without --static, the model's traffic profile runs under Dynamo's eager backend (no inductor time): every
    graph break, recompile (with its guard) and recompile-limit hit once, with the calls that met it, the
    codemod that removes its kind, and the static findings it confirms.  With --static, LibCST reads the
    source: each site once, with its kind and codemod.

    \b
    Examples:
      patchkit scan toto
      patchkit scan chronos2 --patched --calls 24 --json scan.json
      patchkit scan toto --static
      patchkit scan path/to/upstream/src --static --json scan.json
    """
    if md_path is not None and not md_path.parent.is_dir():
        raise errors.BadInput(f"--markdown {str(md_path)!r}: folder {str(md_path.parent)!r} does not exist")
    if static:
        r = api.scan_static(target, root=opts.root, patched=patched, json_path=json_path, progress=opts.progress())
        text = render.scan(r)
        md = render.scan(r, markdown=True) if md_path is not None else ""
    else:
        models = [ps.model for ps in api.list_models()]
        if target not in models:
            raise errors.BadInput(f"{target!r} is not a registered model ({', '.join(models)}); the "
                                  f"dynamic scan runs a model: give one, or read a folder with `patchkit scan "
                                  f"{target} --static`")
        d = api.scan_dynamic(target, root=opts.root, patched=patched, size=size, calls=calls, seed=seed,
                             json_path=json_path, progress=opts.progress())
        text = render.dynamic_scan(d)
        md = render.dynamic_scan(d, markdown=True) if md_path is not None else ""
    click.echo(text, nl=False)
    if md_path is not None:
        md_path.write_text(md)


@cli.command()
@click.argument("model")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if vendor/MODEL is not what apply would produce.")
@click.option("--diff", is_flag=True, help="Write nothing; print the unified diff upstream -> patched.")
@click.option("--force", is_flag=True, help="Overwrite hand edits in vendor/MODEL (never in the pristine tree).")
@click.pass_obj
def apply(opts: Options, model: str, check: bool, diff: bool, force: bool) -> None:
    """Run MODEL's patch set over the pristine upstream into vendor/MODEL.

    Idempotent (a second run writes nothing) and atomic (a failed run leaves
    the previous tree). Put vendor/MODEL first on sys.path to import the
    patched code.

    \b
    Examples:
      patchkit apply chronos2
      patchkit apply chronos2 --diff
      patchkit apply chronos2 --check   # in CI: is the tree current?
    """
    r = api.apply(model, root=opts.root, check=check, diff=diff, force=force)
    for warning in r.warnings:
        click.echo(f"warning: {warning}", err=True)
    if diff:
        click.echo(r.diff, nl=False)
        return
    width = max((len(s.codemod) for s in r.steps), default=0)
    for s in r.steps:
        click.echo(f"  {s.codemod:{width}s} {s.status:14s} {s.message}")
    if check:
        if r.up_to_date:
            click.echo(f"{_rel(r.tree, opts.root)} is up to date ({r.model} {r.version})")
            return
        listed = ", ".join(r.mismatched[:5]) or "tree missing"
        click.echo(f"{_rel(r.tree, opts.root)} is out of date: {listed}", err=True)
        sys.exit(errors.EXIT_VERIFY_FAILED)
    verb = "patched" if r.wrote else "up to date, nothing written:"
    click.echo(f"{verb} {r.model} {r.version} -> {_rel(r.tree, opts.root)} ({len(r.changed_files)} file(s) differ from upstream)")


@cli.command()
@click.argument("model")
@click.option("--logs", default="graph_breaks", show_default=True,
              help="TORCH_LOGS artifacts to show per variant (graph_breaks, recompiles, ...). "
                   "graph_breaks and recompiles are always collected.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON.")
@click.option("--size", type=click.Choice(["tiny", "real"]), default="tiny", show_default=True,
              help="tiny: small seeded models (fast); real: the published architecture with seeded random weights.")
@click.option("--weights",
              help="A local checkpoint directory (kronos: MODEL_DIR,TOKENIZER_DIR). Default: seeded random weights "
                   "(chronos2 tiny: upstream's test checkpoint).")
@click.option("--traffic", is_flag=True,
              help="Run the model's traffic profile (varied batch, history, horizon, variates, samples) through "
                   "the upstream's public entry point, and hold the patched tree to its graph budget.")
@click.option("--calls", type=click.IntRange(1), default=24, show_default=True, help="--traffic: calls in the profile.")
@click.option("--seed", type=int, default=0, show_default=True, help="--traffic: profile and data seed.")
@click.option("--repeats", type=click.IntRange(0), default=2, show_default=True,
              help="--traffic: steady passes repeated over the eager data, each compared with eager per element.")
@click.option("--load", type=click.IntRange(0), default=0, show_default=True,
              help="--traffic: busy processes sharing the CPU while the repeats run (a loaded host).")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda (not applicable without a GPU).")
@click.option("--mode", type=click.Choice(["default", "reduce-overhead", "max-autotune"]), default="default",
              show_default=True, help="--traffic: inductor mode of the patched compiled pass (reduce-overhead: CUDA only).")
@click.option("--aot", "aot_package", type=click.Path(dir_okay=False, path_type=Path),
              help="Check a `patchkit export` package instead: the traffic profile through the upstream's entry "
                   "point, package vs upstream eager (<= 1e-5 relative), with no compiling in its process.")
@click.option("--tolerance", type=float, help="Scaled MAE / prediction drift tolerance, >= 0 (default: the patch "
                                              "set's). A verdict under another tolerance is not recorded for "
                                              "install.")
@click.option("--backend", type=click.Choice(["inductor", "aot_eager", "eager"]), default=None,
              help="torch.compile backend for the break/recompile analysis (Dynamo decides breaks before the "
                   "backend runs; eager is faster). Default: inductor; with --traffic, eager for the upstream "
                   "variant. Forecasts and the patched traffic pass always use inductor.")
@click.pass_obj
def verify(opts: Options, model: str, logs: str, json_path: Path | None, size: str, weights: str | None,
           traffic: bool, calls: int, seed: int, repeats: int, load: int, device: str, mode: str,
           aot_package: Path | None, tolerance: float | None, backend: str | None) -> None:
    """Prove the fix: graph breaks, recompiles and forecast fidelity, upstream vs patched.

    Each variant runs in its own subprocess with TORCH_LOGS set. Without
    --traffic: exit 0 only when the patched tree has no graph break, stays in
    its recompile budget, compiles with fullgraph=True, and its compiled
    forecasts match upstream eager within the tolerance. With --traffic: a
    seeded stream of calls through the users' entry point; exit 0 only when
    every compiled unit stays in its graph budget, no recompile limit is hit,
    a second pass with new data does not recompile, patched eager equals
    upstream eager, compiled drift is within bounds in every pass (--repeats
    more steady passes over the same data, per element, with --load busy
    processes beside them), and the upstream shows the hazard the patch set
    claims.

    \b
    Examples:
      patchkit verify chronos2 --logs graph_breaks
      patchkit verify toto --logs graph_breaks,recompiles --json toto.json
      patchkit verify toto --traffic --size real --json toto-traffic.json
      patchkit verify toto --traffic --repeats 20 --load 2
      patchkit verify kronos --traffic --weights ~/ckpt/Kronos-small,~/ckpt/Kronos-Tokenizer-base
      patchkit verify chronos2 --aot dist/chronos2-tiny-cpu.pt2
    """
    extra = _csv(logs)
    progress = opts.progress()

    def shown(render):
        def show(report, raw) -> None:  # the verdict is printed before any file is written
            click.echo(render(report))
            if opts.verbose:
                for label, text in raw.items():
                    click.echo(f"\n--- {label} stderr ---\n{text}")
        return show

    if aot_package is not None:
        if traffic or size != "tiny" or weights or mode != "default" or backend or load:
            raise click.UsageError("--aot takes its size, weights and device from the package record; it combines "
                                   "only with --calls, --seed and --json")

        report, _ = api.verify_aot(model, aot_package, root=opts.root, calls=calls, seed=seed,
                                   json_path=json_path, progress=progress, on_report=shown(render.aot))
    elif traffic:

        report, _ = api.verify_traffic(model, root=opts.root, size=size, calls=calls, seed=seed, weights=weights,
                                       device=device, mode=None if mode == "default" else mode,
                                       analysis_backend=backend or "eager", logs=extra, repeats=repeats,
                                       load=load, json_path=json_path,
                                       progress=progress, on_report=shown(render.traffic))
    else:
        if mode != "default":
            raise click.UsageError("--mode applies to --traffic runs")
        if load:
            raise click.UsageError("--load applies to --traffic runs")

        def show(report, raw) -> None:
            click.echo(render.verify(report, extra, opts.verbose, raw))

        report, _ = api.verify(model, root=opts.root, weights=weights, logs=extra, json_path=json_path,
                               tolerance=tolerance, backend=backend or "inductor", size=size, device=device,
                               progress=progress, on_report=show)
    if json_path:
        click.echo(f"report written to {json_path}")
    if not report.ok:
        sys.exit(errors.EXIT_VERIFY_FAILED)


@cli.command("upgrade-check")
@click.argument("model")
@click.option("--to", "targets", multiple=True, help="Target version (pip) or ref (git). Repeat with --matrix.")
@click.option("--matrix", is_flag=True, help="Check every known version (or each --to) and print one table.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a Markdown report (reads well as a pull-request comment).")
@click.option("--from", "from_", help="git models: repository URL or path to read refs from.")
@click.option("--upstream-tests/--no-upstream-tests", default=None,
              help="Run upstream's own tests on the patched target (default: on for one target, off for --matrix).")
@click.option("--verify/--no-verify", "do_verify", default=True, help="Run verify on the target (default: on).")
@click.option("--backend", type=click.Choice(["inductor", "aot_eager", "eager"]), default=None,
              help="Analysis backend (default: inductor for one target, eager for --matrix).")
@click.option("--isolated", is_flag=True,
              help="Run verify and upstream's tests in a cached virtual environment holding the target's own "
                   "requirements, torch pinned to the running version ($PATCHKIT_CACHE/envs).")
@click.pass_obj
def upgrade_check(opts: Options, model: str, targets: tuple[str, ...], matrix: bool, json_path: Path | None,
                  md_path: Path | None, from_: str | None, upstream_tests: bool | None, do_verify: bool,
                  backend: str | None, isolated: bool) -> None:
    """Will MODEL's patches survive an upstream release? Checked in a scratch dir; vendor/ is untouched.

    Per codemod: applied, already-fixed (upstream fixed the hazard) or drifted
    (its pattern is gone: names file and construct). Then verify, and upstream's
    own tests on the pristine and the patched target, compared test by test: only
    a test that passes on pristine and fails on patched is a regression. The
    target's declared requirements are checked against this environment.
    Exit 0 safe (or safe-with-baseline-failures), 1 regressed, 3 environment
    (the pristine target does not run here), 4 drift.

    \b
    Examples:
      patchkit upgrade-check chronos2 --to 2.3.2 --markdown pr-comment.md
      patchkit upgrade-check chronos2 --to 2.2.2 --isolated
      patchkit upgrade-check toto --matrix --json toto-matrix.json
      patchkit upgrade-check kronos --from ~/src/Kronos --to main
    """

    if not targets and not matrix:
        raise click.UsageError("give --to VERSION, or --matrix")

    def shown(r) -> None:
        if not matrix:
            click.echo(render.upgrade(r))
        else:
            click.echo(f"{model} {r.target}: {r.verdict}", err=True)

    pinned, reports = api.upgrade_check(model, targets, root=opts.root, matrix=matrix, archive=from_,
                                        verify=do_verify, upstream_tests=upstream_tests, backend=backend,
                                        isolated=isolated, progress=opts.notes(), on_report=shown)
    if matrix:
        torch_version = next((r.torch_version for r in reports if r.torch_version), "")
        click.echo(f"{model} upgrade matrix (torch {torch_version}, device cpu, pinned {pinned})")
        click.echo(render.upgrade_matrix(reports, markdown=False))
    if json_path:
        upgrade.dump_json(reports if matrix else reports[0], json_path)
    if md_path:
        md_path.write_text(render.upgrade_matrix(reports) if matrix else render.upgrade(reports[0]))
    codes = {r.exit_code for r in reports}
    for code in (errors.EXIT_DRIFT, errors.EXIT_VERIFY_FAILED, errors.EXIT_ENVIRONMENT):  # most telling first
        if code in codes:
            sys.exit(code)


@cli.command()
@click.argument("model")
@click.option("--modes", default="eager,default,reduce-overhead,max-autotune", show_default=True,
              help="Comma list of: eager, default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs.")
@click.option("--dtype", "dtypes", default="float32", show_default=True, help="Comma list of float32, bfloat16.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True, help="Series per forecast call.")
@click.option("--runs", type=click.IntRange(1), default=10, show_default=True, help="Timed runs after warm-up.")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda when a GPU is present.")
@click.option("--warm-start/--no-warm-start", default=True, show_default=True,
              help="Add a row per variant: a fresh process over the kept inductor cache.")
@click.option("--size", type=click.Choice(["tiny", "real"]), default="tiny", show_default=True,
              help="tiny: small seeded models; real: the published architecture with seeded random weights.")
@click.option("--weights", help="A local checkpoint directory (kronos: MODEL_DIR,TOKENIZER_DIR).")
@click.option("--traffic", is_flag=True,
              help="Add the traffic row: the whole traffic profile's wall time (compile included) for upstream "
                   "eager, patched eager, patched compiled on a cold and on a warm inductor cache, and the "
                   "break-even call count.")
@click.option("--aot", "aot_package", type=click.Path(dir_okay=False, path_type=Path),
              help="Bench a `patchkit export` package instead of the compile modes: aot-load and first forecast in "
                   "a fresh process; with --traffic, the profile's p50/p95/total for upstream eager, the package and "
                   "patched torch.compile (cold, then steady). Size, weights and device come from the package.")
@click.option("--calls", type=click.IntRange(1), default=24, show_default=True, help="--traffic: calls in the profile.")
@click.option("--seed", type=int, default=0, show_default=True, help="--traffic: profile and data seed.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write rows as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the table as Markdown.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG plot.")
@click.pass_obj
def bench(opts: Options, model: str, modes: str, dtypes: str, batch: int, runs: int, device: str, warm_start: bool,
          size: str, weights: str | None, traffic: bool, aot_package: Path | None, calls: int, seed: int,
          json_path: Path | None, md_path: Path | None, plot_path: Path | None) -> None:
    """Latency per compile mode, upstream vs patched, each row in a fresh process.

    Per row: first call (compile included), median and IQR of the timed runs
    after warm-up, graphs, graph breaks, recompiles, peak memory and the MAE
    difference to upstream eager. CUDA-only modes are "n/a" on a CPU.

    \b
    Examples:
      patchkit bench chronos2 --modes eager,default --runs 20 --plot chronos2.png
      patchkit bench toto --dtype float32,bfloat16 --json toto-bench.json
      patchkit bench chronos2 --size real --modes eager,default --traffic --runs 5
      patchkit bench chronos2 --aot dist/chronos2-real-cpu.pt2 --traffic --calls 8
    """
    import torch

    if aot_package is not None:
        if plot_path:
            raise errors.BadInput("--plot is for the compile-mode rows, not --aot")
        ab = api.bench_aot(model, aot_package, root=opts.root, traffic=traffic, calls=calls, seed=seed,
                           progress=opts.notes(""))
        click.echo(render.bench_aot(ab))
        if json_path:
            json_path.write_text(json.dumps(ab.to_json(), indent=2) + "\n")
        if md_path:
            md_path.write_text(render.bench_aot(ab, markdown=True))
        return

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise errors.EnvironmentProblem("--device cuda asked for, but torch sees no CUDA device")
    rep = api.bench(model, root=opts.root, modes=_csv(modes), dtypes=_csv(dtypes), batch=batch, runs=runs,
                    device=device, warm_start=warm_start, size=size, weights=weights, traffic=traffic, calls=calls,
                    seed=seed, progress=opts.notes(""))

    click.echo(render.bench(rep))
    if rep.traffic:
        click.echo(render.bench_traffic(rep.traffic))
    if json_path:
        json_path.write_text(json.dumps(rep.to_json(), indent=2) + "\n")
    if md_path:
        md_path.write_text(render.bench(rep, markdown=True)
                           + ("\n" + render.bench_traffic(rep.traffic, markdown=True) if rep.traffic else ""))
    if plot_path:
        bench_mod.plot(rep, plot_path)
        click.echo(f"plot written to {plot_path}")


@cli.command()
@click.argument("reports", nargs=-1, required=True)
@click.option("--suffix", default="", help="Appended to each REPORTS argument (for shell loops).")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write verify, traffic and bench reports as one Markdown page (docs/results.md) instead.")
def report(reports: tuple[str, ...], suffix: str, md_path: Path | None) -> None:
    """Summarise patchkit's JSON reports, one table per kind; exit 1 if any is missing or failed.

    Reads verify (plain, --traffic, --aot), upgrade-check, bench, export and
    build reports, mixed in one call; a file that is none of them is refused
    (exit 2, naming it).

    \b
    Example:
      patchkit report reports/*.json
      patchkit report reports/chronos2 reports/toto --suffix .traffic.json
      patchkit report docs/reports/*.json --markdown docs/results.md
    """
    paths = [Path(name + suffix) for name in reports]
    if md_path:
        failed = api.report_markdown(paths, md_path)
        click.echo(f"results written to {md_path} ({len(paths)} report(s))")
    else:
        text, failed = api.report_summary(paths)
        click.echo(text)
    if failed:
        sys.exit(errors.EXIT_VERIFY_FAILED)


@cli.group()
def cache() -> None:
    """Compile caches for torch.compile users: warm, info, clear.

    \b
    `warm` compiles the patched model over its traffic profile from an empty
    inductor cache and saves what was compiled as one portable artifact
    (torch.compiler.save_cache_artifacts) under $PATCHKIT_CACHE/compile,
    keyed by model, size, device, torch version and patch-set hash. A service
    loads it before its first compiled call:
      from patchkit.runtime import load_compile_cache
      load_compile_cache("~/.cache/patchkit/compile/chronos2-real-cpu-....bin")
    """


@cache.command("warm")
@click.argument("model")
@click.option("--size", type=click.Choice(["tiny", "real"]), default="tiny", show_default=True)
@click.option("--weights", help="A local checkpoint directory (kronos: MODEL_DIR,TOKENIZER_DIR).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--calls", type=click.IntRange(1), default=24, show_default=True, help="Traffic calls to compile.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def cache_warm(opts: Options, model: str, size: str, weights: str | None, device: str, calls: int, seed: int) -> None:
    """Compile MODEL's traffic profile and save the compiled graphs as one artifact.

    \b
    Examples:
      patchkit cache warm chronos2 --size real
      patchkit cache warm kronos --calls 12
    """
    e = api.cache_warm(model, root=opts.root, size=size, weights=weights, device=device, calls=calls, seed=seed,
                       progress=opts.notes())
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(e.artifacts.items())) or "no artifact counts"
    click.echo(f"saved {e.path} ({e.bytes / 1e6:.1f} MB: {kinds}) in {e.seconds:.1f} s")


@cache.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def cache_info(opts: Options, as_json: bool) -> None:
    """List the saved compile-cache artifacts (current: this torch and the workspace's patch set)."""

    rows = api.cache_info(root=opts.root)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    click.echo(f"{cache_dir()}: {len(rows)} artifact(s)")
    for r in rows:
        state = {True: "current", False: "stale", None: "-"}[r.current]
        click.echo(f"  {r.model:9s} {r.size:5s} {r.device:5s} torch {r.torch:14s} patch set {r.patch_hash} "
                   f"{r.bytes / 1e6:7.1f} MB  {r.calls} calls  {r.created}  {state}")


@cache.command("clear")
@click.argument("model", required=False)
def cache_clear(model: str | None) -> None:
    """Remove the saved artifacts (of MODEL only, if given)."""
    removed = api.cache_clear(model)
    click.echo(f"removed {len(removed)} artifact(s)")


@cli.command()
@click.argument("model")
@click.option("--size", type=click.Choice(["tiny", "real"]), default="tiny", show_default=True,
              help="tiny: small seeded model; real: the published architecture with seeded random weights.")
@click.option("--weights", help="A local checkpoint directory (default: seeded random weights; chronos2 tiny: "
                                "upstream's test checkpoint).")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda (exit 3 without a GPU).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Package file, ending in .pt2 (default: WORKSPACE/dist/MODEL-SIZE-DEVICE.pt2).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the result as JSON.")
@click.pass_obj
def export(opts: Options, model: str, size: str, weights: str | None, device: str, out: Path | None,
           json_path: Path | None) -> None:
    """Export the patched MODEL ahead of time into one .pt2 package (torch.export + AOTInductor).

    The package holds the model's compiled programs with dynamic batch and
    lengths, bounded by the model's limits, and a record (upstream version and
    hash, patch-set hash, torch version, device, ranges, weights source). A
    fresh process loads it with patchkit.runtime.load_package and forecasts
    through the upstream's own API, with no compile at all. Written atomically:
    a finished package or nothing.

    \b
    Examples:
      patchkit export chronos2
      patchkit export chronos2 --size real --out chronos2.pt2 --json chronos2-export.json
    """
    r = api.export(model, root=opts.root, size=size, weights=weights, device=device, out=out, json_path=json_path,
                   progress=opts.progress())
    rec = r.record
    click.echo(f"exported {r.path} ({r.bytes / 1e6:.1f} MB, {r.seconds:.1f} s): {rec['model']} "
               f"{rec['upstream']['version'][:12]} patch set {rec['patch_hash']}, size {rec['size']} "
               f"({rec['parameters']:,} parameters), torch {rec['torch']}, {rec['device']}")
    for name, prog in rec["programs"].items():
        ranges = ", ".join(f"{k} {lo}..{hi}" for k, (lo, hi) in prog["ranges"].items())
        fixed = ", ".join(f"{k} = {v}" for k, v in prog["static"].items())
        click.echo(f"  {name}: {ranges}{'; ' + fixed if fixed else ''}")


@cli.command()
@click.argument("model")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the wheel (default: WORKSPACE/dist).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the result as JSON.")
@click.pass_obj
def build(opts: Options, model: str, out: Path | None, json_path: Path | None) -> None:
    """Build a reproducible wheel of the patched tree of MODEL.

    The wheel keeps the upstream's distribution name (kronos: kronos-patched,
    imported as `kronos`), carries the patch-set hash in its version
    (2.3.2+patchkit.<hash>), the upstream's licence files and a provenance record,
    and leaves upstream tests out. Requirements that exclude the installed
    version of a package (toto-ts pins torch==2.7.0) are relaxed and listed.

    \b
    Examples:
      patchkit build toto && pip install dist/toto_ts-*.whl
      patchkit build kronos --out wheels/
    """
    r = api.build(model, root=opts.root, out=out, progress=opts.notes())
    verb = "unchanged" if r.reused else "built"
    click.echo(f"{verb} {_rel(r.wheel, opts.root)} ({r.dist} {r.version}, sha256 {r.sha256[:12]}...)")
    for c in r.relaxed:
        click.echo(f"  relaxed {c.requirement} -> {c.now}: {c.why}")
    if json_path:
        json_path.write_text(json.dumps(r.to_json(), indent=2) + "\n")


@cli.command()
@click.argument("model")
@click.option("--upstream", is_flag=True, help="Put the pinned upstream release back (kronos: uninstall).")
@click.option("--force", is_flag=True, help="Install although the patch set is not applied or its verify failed.")
@click.option("--no-deps", is_flag=True, help="Do not let pip install the wheel's requirements.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the wheel (default: WORKSPACE/dist).")
@click.pass_obj
def install(opts: Options, model: str, upstream: bool, force: bool, no_deps: bool, out: Path | None) -> None:
    """Install the patched MODEL into this environment with pip, replacing the upstream.

    Builds the wheel if needed. Refuses (exit 2) when the patch set is not
    applied or the last verify of this patch set failed, unless --force.

    \b
    Examples:
      patchkit install toto
      patchkit install toto --upstream     # back to toto-ts==0.2.0 from the package index
    """
    r = api.install(model, root=opts.root, out=out, upstream=upstream, force=force, deps=not no_deps,
                    progress=opts.notes())
    click.echo(f"{r.action}: {r.target}" + (" (--force)" if r.forced else ""))


@cli.command()
@click.argument("models", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def status(opts: Options, models: tuple[str, ...], as_json: bool) -> None:
    """Which distribution of each model this environment imports: upstream, patched (current) or stale.

    \b
    Examples:
      patchkit status
      patchkit status toto --json
    """
    rows = api.status(models, root=opts.root)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    for r in rows:
        ver = f"{r.distribution} {r.version}" if r.version else r.distribution
        verdicts = ", ".join(f"{k} verify {'passed' if v.get('ok') else 'FAILED'}" for k, v in sorted((r.verify or {}).items()))
        click.echo(f"{r.model:9s} {r.state:20s} {ver}" + (f" from {r.location}" if r.location else "")
                   + (f"; {verdicts}" if verdicts else "; verify: no record for this patch set" if r.patched else "")
                   + (f" ({r.detail})" if r.detail else ""))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


_GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def _hoist_global_flags(args: list[str]) -> list[str]:
    """``patchkit verify chronos2 -v`` means ``patchkit -v verify chronos2``: the flags move before the command."""
    cut = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:cut] if a in _GLOBAL_FLAGS]
    return flags + [a for a in args[:cut] if a not in _GLOBAL_FLAGS] + args[cut:]


def _interrupted(err: BaseException) -> bool:
    """True when ``err`` is, or was raised while handling, a Ctrl-C (some libraries wrap it)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (KeyboardInterrupt, errors.Interrupted)):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt("SIGTERM")


def main(argv: list[str] | None = None) -> int:
    """The one error boundary: every failure becomes one line on stderr and its exit code (``patchkit.errors``)."""
    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    verbose = "-v" in args or "--verbose" in args
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)  # finally blocks clean up, as after Ctrl-C
    except ValueError:  # not the main thread
        pass
    try:
        cli.main(args=args, prog_name="patchkit", standalone_mode=False)
    except click.exceptions.Abort:
        _echo_err("interrupted; nothing half-written was left")
        return errors.EXIT_INTERRUPTED
    except click.ClickException as err:
        ctx = getattr(err, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _echo_err(f"{err.format_message()}{hint}")
        return errors.EXIT_BAD_INPUT
    except SystemExit as err:
        return int(err.code or 0) if isinstance(err.code, int) or err.code is None else 1
    except BaseException as err:  # noqa: BLE001 - the boundary: one line and an exit code for everything
        if _interrupted(err):
            _echo_err("interrupted; nothing half-written was left")
            return errors.EXIT_INTERRUPTED
        known = errors.classify(err)
        if verbose:
            traceback.print_exc()
        if known is not None:
            _echo_err(str(known))
            return known.exit_code
        log = errors.write_log("internal", traceback.format_exc())
        where = f"traceback in {log}; " if log else ""
        _echo_err(f"internal error: {type(err).__name__}: {errors.one_line(str(err), 300)} ({where}"
                  "`patchkit -v COMMAND ...` prints it)")
        return errors.EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
