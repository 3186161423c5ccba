"""The documentation is true: README commands exist, links resolve, results.md is regenerated, layers hold.

Fast: no torch compile, no subprocess except the CLI in-process.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

import click
import pytest

from patchkit import results
from patchkit.cli import cli
from patchkit.codemods import REGISTRY

from .conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SHELL_LANGS = {"bash", "sh", "shell", "console"}


# --- README size ---------------------------------------------------------------------------------------------

def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_sections_in_order() -> None:
    heads = [line for line in README.read_text().splitlines() if line.startswith("## ")]
    want = ["## Set-up", "## A session", "## The command line", "## Exit codes", "## Documentation"]
    assert [h for h in heads if h in want] == want


def test_setup_commands_exist_and_ci_runs_the_test_command() -> None:
    text = README.read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    cmds = [line.split("#")[0].strip() for block in _blocks(setup) for line in block.splitlines() if line.strip()]
    assert cmds == ["./VERIFY_FIXES.sh", "./scripts/test.sh"]
    for cmd in cmds:
        assert (ROOT / cmd).is_file()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


# --- README / CONTRIBUTING / docs commands against the click tree ---------------------------------------------------

def _blocks(text: str, langs: set[str] = SHELL_LANGS) -> list[str]:
    """The bodies of fenced code blocks whose language is one of ``langs``."""
    return [m.group(2) for m in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.M | re.S) if m.group(1) in langs]


def _commands(block: str) -> list[list[str]]:
    """Each ``patchkit ...`` invocation in a shell block, as tokens from ``patchkit`` on (comments dropped)."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"^\s*\$\s+", "", line)
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            tokens = line.split()
        for i, tok in enumerate(tokens):
            if tok == "patchkit" or tok.endswith("/patchkit"):
                cmd = [tok]
                for t in tokens[i + 1:]:
                    if t in ("&&", "||", "|", ";") or t.endswith(";"):
                        break
                    cmd.append(t)
                found.append(cmd)
    return found


def _opts(command: click.Command) -> dict[str, click.Parameter]:
    known: dict[str, click.Parameter] = {}
    for p in command.get_params(click.Context(command)):
        if isinstance(p, click.Option):
            for o in (*p.opts, *p.secondary_opts):
                known[o] = p
    return known


def check_command(tokens: list[str]) -> list[str]:
    """Problems with one ``patchkit ...`` invocation: an unknown subcommand or an option the command lacks."""
    problems: list[str] = []
    command: click.Command = cli
    path = ["patchkit"]
    args = tokens[1:]
    i = 0
    while i < len(args):
        tok = args[i]
        if tok.startswith("-"):
            name = tok.split("=", 1)[0]
            opt = _opts(command).get(name)
            if opt is None:
                problems.append(f"{' '.join(path)}: no option {name}")
            elif not opt.is_flag and not opt.count and "=" not in tok:
                i += 1  # its value
        elif isinstance(command, click.Group):
            sub = command.get_command(click.Context(command), tok)
            if sub is None:
                problems.append(f"{' '.join(path)}: no subcommand {tok!r}")
                return problems
            command, path = sub, [*path, tok]
        i += 1
    if isinstance(command, click.Group) and command is not cli:
        problems.append(f"{' '.join(path)}: a group, needs a subcommand")
    return problems


def _doc_commands(path: Path) -> list[list[str]]:
    return [cmd for block in _blocks(path.read_text()) for cmd in _commands(block)]


@pytest.mark.parametrize("doc", [README, CONTRIBUTING, *DOCS], ids=lambda p: p.name)
def test_every_patchkit_command_in_the_doc_exists(doc: Path) -> None:
    cmds = _doc_commands(doc)
    problems = [f"{' '.join(c)}: {p}" for c in cmds for p in check_command(c)]
    assert not problems, "\n".join(problems)


def test_readme_shows_every_subcommand() -> None:
    used = {tuple(c[1:3]) for c in _doc_commands(README)} | {(c[1],) for c in _doc_commands(README) if len(c) > 1}
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):
            for sub in command.commands:
                assert (name, sub) in used, f"README shows no `patchkit {name} {sub}`"
        else:
            assert (name,) in used, f"README shows no `patchkit {name}`"


def test_checker_catches_bad_lines() -> None:
    [good] = _commands("patchkit --root /tmp -v verify toto --traffic --size real --json t.json  # comment --nope")
    assert check_command(good) == []
    [bad_opt] = _commands("PATCHKIT_SIZE=tiny .venv/bin/patchkit verify toto --no-such-option")
    assert check_command(bad_opt) == ["patchkit verify: no option --no-such-option"]
    [bad_sub] = _commands("patchkit cache nosuch toto")
    assert check_command(bad_sub) == ["patchkit cache: no subcommand 'nosuch'"]
    [bad_top] = _commands("patchkit frobnicate")
    assert check_command(bad_top) == ["patchkit: no subcommand 'frobnicate'"]
    [bare_group] = _commands("patchkit cache")
    assert check_command(bare_group) == ["patchkit cache: a group, needs a subcommand"]
    # a global option after the subcommand is not the subcommand's
    [misplaced] = _commands("patchkit list --root /tmp")
    assert check_command(misplaced) == ["patchkit list: no option --root"]
    # nested: `cache warm` takes --calls, `cache info` does not
    assert check_command(_commands("patchkit cache warm toto --calls 24")[0]) == []
    assert check_command(_commands("patchkit cache info --calls 3")[0]) == ["patchkit cache info: no option --calls"]
    # an option's value is not read as a subcommand or option; `=` forms and --no- flags are known
    assert check_command(_commands("patchkit upgrade-check toto --to=0.2.0 --no-verify --from x")[0]) == []
    # a line continued with a backslash is one command
    assert check_command(_commands("patchkit verify toto \\\n  --bogus")[0]) == ["patchkit verify: no option --bogus"]


# --- links ---------------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def broken_links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{path.name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{path.name}: {target} (no such heading)")
    return broken


@pytest.mark.parametrize("doc", [README, CONTRIBUTING, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    assert broken_links(doc) == []


def test_link_checker_catches_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading, here\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](there.md) [ok](there.md#a-heading-here) [web](https://example.com/x)\n"
                   "[gone](missing.md) [bad anchor](there.md#nope) `[code](ignored.md)`\n")
    assert broken_links(doc) == ["doc.md: missing.md (no such file)", "doc.md: there.md#nope (no such heading)"]


# --- codemods doc against the registry ----------------------------------------------------------------------

def test_codemods_doc_names_every_codemod_and_option() -> None:
    text = (ROOT / "docs" / "codemods.md").read_text()
    for name, cls in REGISTRY.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"docs/codemods.md has no table row for {name}"
        options = [line for line in text.splitlines() if line.startswith(f"| `{name}` options |")]
        assert len(options) == 1, f"docs/codemods.md: one options row for {name}"
        listed = set(re.findall(r"`(\w+)`", options[0].split("|")[2]))
        assert listed == set(cls.OPTIONS), f"{name}: options in docs {sorted(listed)} != {sorted(cls.OPTIONS)}"


# --- docs/results.md is generated ---------------------------------------------------------------------------

def test_results_md_is_regenerated_from_the_committed_reports(tmp_path: Path, capsys, monkeypatch) -> None:
    reports = sorted((ROOT / "docs" / "reports").glob("*.json"))
    assert reports, "docs/reports/ holds the reports behind docs/results.md"
    monkeypatch.chdir(ROOT)
    rel = [str(p.relative_to(ROOT)) for p in reports]
    text = results.render_markdown([Path(p) for p in rel], Path("docs/results.md"))
    assert text == (ROOT / "docs" / "results.md").read_text(), (
        "docs/results.md differs from what its reports render: run "
        "`patchkit report docs/reports/*.json --markdown docs/results.md`")


def _verify_report(model: str, ok: bool, **extra) -> dict:
    variant = {"graph_breaks": 0, "recompiles": 0, "graphs": 1, "fullgraph_ok": True, "recompile_limit_hit": False,
               "steady_state_ok": True}
    return {"model": model, "upstream_version": "2.3.2", "torch_version": "2.13.0+cpu", "device": "cpu",
            "size": "tiny", "created": "2026-12-01T10:00:00+00:00", "ok": ok,
            "upstream": {**variant, "graph_breaks": 3, "graphs": 5, "fullgraph_ok": False}, "patched": variant,
            "mae": {"abs_diff": 1.3e-6}, **extra}


def test_report_markdown_writes_one_page(tmp_path: Path, capsys) -> None:
    rep = tmp_path / "reports"
    rep.mkdir()
    (rep / "chronos2.verify.json").write_text(json.dumps(_verify_report("chronos2", True)))
    unit = {"name": "model", "graphs": 2, "budget": 2}
    traffic = {"model": "toto", "upstream_version": "0.2.0", "torch_version": "2.13.0+cpu", "device": "cpu",
               "size": "tiny", "parameters": 51632, "created": "2026-12-02T10:00:00+00:00", "calls": [{}] * 24,
               "ok": True, "latency": {"patched_steady": {"p50_s": 0.0123}, "steady_speedup_vs_upstream_eager": 2.5},
               "upstream": {"graphs": 37, "recompile_limit_hit": True, "steady_ok": True, "units": [unit]},
               "patched": {"graphs": 2, "recompile_limit_hit": False, "steady_ok": True, "units": [unit]},
               "fidelity": [{"what": "patched eager vs upstream eager (x)", "worst_rel": 0.0, "ok": True},
                            {"what": "patched compiled vs patched eager (x)", "worst_rel": 2e-6, "ok": True,
                             "worst_elem": 3e-7, "elem_bound": 1e-5}], "repeats": 2}
    (rep / "toto.traffic.json").write_text(json.dumps(traffic))
    bench = {"model": "kronos", "upstream_version": "67b630e67f6a18c9", "torch_version": "2.13.0+cpu",
             "device": "cpu", "date": "2026-12-03", "batch": 8, "runs": 10, "size": "tiny", "parameters": 55662,
             "notes": [], "traffic": None,
             "rows": [{"variant": "patched", "mode": "default", "dtype": "float32", "device": "cpu", "status": "ok",
                       "note": "", "warm_start": False, "first_call_s": 26.8, "median_s": 0.1112, "spread_s": 0.037,
                       "runs": 10, "graphs": 4, "graph_breaks": 0, "recompiles": 2, "peak_mem_mb": 625.0,
                       "mae": 0.2, "mae_diff": 0.0}]}
    (rep / "kronos.bench.json").write_text(json.dumps(bench))
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    code, said, _ = run_cli(capsys, "report", *sorted(str(p) for p in rep.glob("*.json")), "--markdown", str(out))
    assert code == 0 and "3 report(s)" in said
    text = out.read_text()
    assert f"`patchkit report {rep.as_posix()}/*.json --markdown" in text
    assert "torch 2.13.0+cpu | device cpu | size tiny | date 2026-12-01" in text
    assert "| chronos2 | `2.3.2` | 3 → 0 | 0 → 0 | 5 → 1 | ok |" in text
    assert "[chronos2.verify.json](../reports/chronos2.verify.json)" in text
    assert "torch 2.13.0+cpu | device cpu | size tiny | date 2026-12-02" in text
    assert ("| toto | `0.2.0` | 51,632 | 24 | 37 → 2 | model 2/2 | yes → no | ok | 0.0e+00 | 2.0e-06 | 3.0e-07 (2) | "
            "12.3 | 2.50× | OK |") in text
    assert "kronos 67b630e67f6a | size tiny (55,662 parameters) | torch 2.13.0+cpu | device cpu" in text
    assert "| patched | default | float32 | 26.80 | 111.2 |" in text
    # a version other than the patch set's pin is marked
    (rep / "chronos2.verify.json").write_text(json.dumps(_verify_report("chronos2", False, upstream_version="2.2.2")))
    code, _, _ = run_cli(capsys, "report", str(rep / "chronos2.verify.json"), "--markdown", str(out))
    assert code == 1
    assert "`2.2.2` (not the pin `2.3.2`)" in out.read_text() and "FAILED" in out.read_text()
    assert "- `chronos2`: these reports were made from upstream `2.2.2`, not the patch set's pin `2.3.2`" in (
        out.read_text())
    code, _, err = run_cli(capsys, "report", str(rep / "missing.json"), "--markdown", str(out))
    assert code == 2 and "no such report" in err


# --- layers --------------------------------------------------------------------------------------------------

PACKAGES = {"patchkit": "patchkit", "codemods": "patchkit.codemods", "verify": "patchkit.verify",
            "patches": "patchkit.patches"}


def _module_name(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    name = PACKAGES[folder]
    return name if path.stem == "__init__" else f"{name}.{path.stem}"


def _canonical(name: str) -> str:
    """``verify.x`` (the repository's folder names) and ``patchkit.verify.x`` are one module."""
    head, _, rest = name.partition(".")
    if head in PACKAGES and head != "patchkit":
        return PACKAGES[head] + (f".{rest}" if rest else "")
    return name


def _package(path: Path) -> str:
    me = _module_name(path)
    return me if path.stem == "__init__" else me.rsplit(".", 1)[0]


def _resolve(nodes, package: str) -> set[str]:
    """The absolute modules the import statements among ``nodes`` name (``from a import b`` names a and a.b)."""
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {_canonical(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = _canonical(node.module or "")
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names if a.name != "*"}
    return found


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (function-level imports included)."""
    return _resolve(ast.walk(ast.parse(path.read_text())), _package(path))


def load_time_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it is loaded: outside functions and ``if TYPE_CHECKING:``."""
    def walk(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                yield from walk(node.orelse)
                continue
            yield node
            yield from walk(ast.iter_child_nodes(node))

    return _resolve(walk(ast.parse(path.read_text()).body), _package(path))


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _violations(folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in _sources(folder):
        for mod in sorted(imports(path)):
            hit = any(mod == f or mod.startswith(f + ".") for f in forbidden)
            ok = any(mod == a or mod.startswith(a + ".") for a in allowed)
            if hit and not ok:
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    return bad


def test_import_resolution() -> None:
    got = imports(ROOT / "verify" / "traffic_report.py")
    assert {"patchkit.errors", "patchkit.verify.logs", "patchkit.verify.report"} <= got
    assert "patchkit.codemods.base" in imports(ROOT / "codemods" / "isnan_guard.py")


def test_codemods_import_no_other_patchkit_layer() -> None:
    assert _violations("codemods", ("patchkit",), allowed=("patchkit.codemods",)) == []


def test_verify_imports_no_cli_api_bench_distribute() -> None:
    assert _violations("verify", ("patchkit.cli", "patchkit.api", "patchkit.bench", "patchkit.distribute")) == []


def test_verify_imports_only_the_lowest_patchkit_layers() -> None:
    """verify's reports and checks use patchkit's errors and patch-set types, nothing above them; only the runner
    scripts (``runner.py``, ``*_runner.py``: each the entry point of its own subprocess) also load the patch-set
    registry and the packaged-model runtime they drive.  protocol.py imports nothing of patchkit at all."""
    def runner(v: str) -> bool:
        return v.split(" ")[0].endswith(("/runner.py", "_runner.py"))

    lowest = ("patchkit.verify", "patchkit.errors", "patchkit.patchset")
    bad = [v for v in _violations("verify", ("patchkit",), allowed=lowest) if not runner(v)]
    bad += [v for v in _violations("verify", ("patchkit",), allowed=(*lowest, "patchkit.patches", "patchkit.aot",
                                                                      "patchkit.runtime"))
            if not v.endswith(" imports patchkit")]  # `from patchkit import patches`
    assert bad == []
    assert not [m for m in imports(ROOT / "verify" / "protocol.py") if m.startswith("patchkit")]


def test_patches_import_no_cli_or_api() -> None:
    assert _violations("patches", ("patchkit.cli", "patchkit.api")) == []


def test_only_the_cli_imports_the_cli() -> None:
    folders = ("patchkit", "codemods", "verify", "patches")
    bad = [v for f in folders for v in _violations(f, ("patchkit.cli",)) if not v.startswith("patchkit/cli.py")]
    assert bad == []


def test_no_import_cycle_at_load_time() -> None:
    """patchkit's modules import each other without a cycle when loaded (function-level imports excepted)."""
    graph: dict[str, set[str]] = {}
    for folder in PACKAGES:
        for path in _sources(folder):
            graph[_module_name(path)] = set()
    for folder in PACKAGES:
        for path in _sources(folder):
            graph[_module_name(path)] = {m for m in load_time_imports(path) if m in graph and m != _module_name(path)}
    # a package's __init__ importing its own submodules is not a cycle back into the package
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
