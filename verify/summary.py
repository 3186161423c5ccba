"""``patchkit report``: every JSON report patchkit writes, summarised in one table per kind.

Kinds: ``verify --json`` (plain), ``verify --traffic --json``, ``verify --aot
--json``, ``upgrade-check --json`` (one target or a matrix), ``bench --json``,
``export --json`` and ``build --json``.  A file that is none of them is
refused with one line naming it (``BadInput``); a missing one is a NO REPORT
row, which fails the summary like a failed verify.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from patchkit.errors import BadInput, json_error

#: the order tables print in, with each kind's header row
HEADERS: dict[str, tuple[str, ...]] = {
    "verify": ("model", "upstream", "breaks up->patched", "recompiles up->patched", "fullgraph", "MAE diff", "result"),
    "traffic": ("model", "size", "calls", "graphs up->patched", "patched units (graphs/budget)", "limit hit",
                "steady", "eager match", "compiled drift", "worst element (repeats)", "result"),
    "aot": ("model", "package", "size", "calls", "refused", "errors", "worst rel", "result"),
    "upgrade": ("model", "pinned", "target", "verdict", "result"),
    "bench": ("model", "size", "device", "rows ok", "result"),
    "export": ("model", "package", "size", "MB", "result"),
    "build": ("model", "wheel", "version", "result"),
}

WHAT = ("verify, verify --traffic, verify --aot, upgrade-check, bench, export or build JSON reports")


@dataclass(frozen=True)
class Loaded:
    path: Path
    kind: str
    #: one dict per report (an upgrade-check matrix holds several); empty for a missing file
    reports: tuple[dict[str, Any], ...]


def kind_of(data: Any) -> str | None:
    """Which report ``data`` is (``None``: not one patchkit writes)."""
    if isinstance(data, list):
        return "upgrade" if data and all(kind_of(x) == "upgrade" for x in data) else None
    if not isinstance(data, dict):
        return None
    patched = data.get("patched")
    if {"verdict", "target", "steps"} <= data.keys():
        return "upgrade"
    if {"package", "programs", "program_calls", "fidelity"} <= data.keys():
        return "aot"
    if isinstance(patched, dict) and "units" in patched and "fidelity" in data:
        return "traffic"
    if isinstance(patched, dict) and "graph_breaks" in patched and isinstance(data.get("upstream"), dict):
        return "verify"
    if {"rows", "batch", "runs"} <= data.keys():
        return "bench"
    if {"path", "bytes", "record"} <= data.keys():
        return "export"
    if {"wheel", "sha256", "dist"} <= data.keys():
        return "build"
    return None


def load(path: Path) -> Loaded:
    """Read one report; refuse (one line, naming the file) what is not one."""
    if not path.exists():
        return Loaded(path, "traffic" if path.name.endswith(".traffic.json") else "verify", ())
    if path.is_dir():
        raise BadInput(f"{path}: a directory, not a report (give the JSON files, e.g. {path}/*.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not valid JSON ({json_error(err)})") from None
    except OSError as err:
        raise BadInput(f"{path}: cannot be read ({err.strerror or err})") from None
    kind = kind_of(data)
    if kind is None:
        shape = f"a JSON {type(data).__name__}" + (" without the fields of any report" if isinstance(data, dict)
                                                    else "")
        raise BadInput(f"{path}: not a patchkit report ({shape}); `patchkit report` reads {WHAT}")
    return Loaded(path, kind, tuple(data) if isinstance(data, list) else (data,))


def _verdict(ok: Any) -> str:
    return "OK" if ok else "FAILED"


def _yes(flag: Any, yes: str) -> str:
    return yes if flag else "no"


def verify_cells(r: dict, arrow: str = "->", yes: str = "YES") -> dict[str, str]:
    """A plain verify report's cells, by column, for this table and the docs page (``patchkit.results``)."""
    up, pa = r["upstream"], r["patched"]
    mae = r.get("mae") or {}
    return {
        "model": r["model"],
        "breaks": f"{up['graph_breaks']} {arrow} {pa['graph_breaks']}",
        "recompiles": f"{up['recompiles']} {arrow} {pa['recompiles']}",
        "graphs": f"{up.get('graphs', '-')} {arrow} {pa.get('graphs', '-')}",
        "fullgraph": "ok" if pa["fullgraph_ok"] else "FAIL",
        "limit": f"{_yes(up.get('recompile_limit_hit'), yes)} {arrow} {_yes(pa.get('recompile_limit_hit'), yes)}",
        "steady": "ok" if pa.get("steady_state_ok") else "FAIL",
        "mae": f"{mae['abs_diff']:.2g}" if "abs_diff" in mae else "-",
        "result": _verdict(r["ok"]),
    }


def _verify_row(r: dict) -> tuple:
    c = verify_cells(r)
    return (c["model"], str(r["upstream_version"])[:12], c["breaks"], c["recompiles"], c["fullgraph"],
            c["mae"] if c["mae"] != "-" else "nan", c["result"])


def worst_element(r: dict) -> str:
    """A traffic report's worst compiled element over the output's scale, across the first compiled pass and its
    steady repeats (``-`` for a report from before the per-element check), with the repeat count and a FAIL
    where it is past its bound."""
    held = [c for c in r.get("fidelity", []) if c.get("elem_bound") is not None]
    if not held:
        return "-"
    worst = max(held, key=lambda c: c["worst_elem"])
    bad = worst["worst_elem"] > worst["elem_bound"]
    return f"{worst['worst_elem']:.1e} ({r.get('repeats', 0)}){' FAIL' if bad else ''}"


def traffic_cells(r: dict, arrow: str = "->", yes: str = "YES") -> dict[str, str]:
    """A traffic report's cells, by column, for this table and the docs page (``patchkit.results``)."""
    up, pa = r["upstream"], r["patched"]
    checks: dict[str, dict] = {}
    for c in r.get("fidelity", []):  # the deterministic check comes first and is the one shown; sampled-only models show theirs
        checks.setdefault(c["what"].split(" (")[0], c)

    def worst(key: str) -> str:
        c = checks.get(key)
        return "-" if c is None else f"{c['worst_rel']:.1e}{'' if c['ok'] else ' FAIL'}"

    return {
        "model": r["model"],
        "calls": str(len(r["calls"])),
        "graphs": f"{up['graphs']} {arrow} {pa['graphs']}",
        "units": ", ".join(f"{u['name']} {u['graphs']}/{u['budget']}" for u in pa["units"]),
        "limit": f"{_yes(up['recompile_limit_hit'], yes)} {arrow} {_yes(pa['recompile_limit_hit'], yes)}",
        "steady": "ok" if pa["steady_ok"] else "FAIL",
        "eager_match": worst("patched eager vs upstream eager"),
        "compiled_drift": worst("patched compiled vs patched eager"),
        "worst_element": worst_element(r),
        "result": _verdict(r["ok"]),
    }


_TRAFFIC_COLUMNS = ("model", "size", "calls", "graphs", "units", "limit", "steady", "eager_match", "compiled_drift",
                    "worst_element", "result")


def _traffic_row(r: dict) -> tuple:
    c = {**traffic_cells(r), "size": r["size"]}
    return tuple(c[k] for k in _TRAFFIC_COLUMNS)


def _aot_row(r: dict) -> tuple:
    worst = max((c["worst_rel"] for c in r["fidelity"]), default=float("nan"))
    return (r["model"], Path(r["package"]).name, r["size"], str(len(r["calls"])), str(len(r.get("refused", []))),
            str(len(r.get("call_errors", []))), f"{worst:.1e}", _verdict(r["ok"]))


def _upgrade_row(r: dict) -> tuple:
    return (r["model"], str(r["pinned"])[:12], str(r["target"])[:12], r["verdict"],
            _verdict(r["verdict"] in ("safe", "safe-with-baseline-failures")))


def _bench_row(r: dict) -> tuple:
    rows = r["rows"]
    ok = sum(1 for x in rows if x["status"] == "ok")
    return (r["model"], r.get("size", "tiny"), r["device"], f"{ok}/{len(rows)}",
            "OK" if all(x["status"] in ("ok", "n/a") for x in rows) else "ERRORS")


def _export_row(r: dict) -> tuple:
    rec = r["record"]
    return (r["model"], Path(r["path"]).name, rec["size"], f"{r['bytes'] / 1e6:.1f}", "OK")


def _build_row(r: dict) -> tuple:
    return (r.get("model", Path(r["wheel"]).name.split("-")[0]), Path(r["wheel"]).name, r["version"], "OK")


ROWS: dict[str, Callable[[dict], tuple]] = {
    "verify": _verify_row, "traffic": _traffic_row, "aot": _aot_row, "upgrade": _upgrade_row,
    "bench": _bench_row, "export": _export_row, "build": _build_row,
}


def summarise(loaded: list[Loaded]) -> tuple[str, bool]:
    """(the tables, whether anything failed or is missing)."""
    rows: dict[str, list[tuple]] = {}
    failed = False
    torch_version = None
    for item in loaded:
        table = rows.setdefault(item.kind, [])
        if not item.reports:
            table.append((item.path.stem.split(".")[0], *["-"] * (len(HEADERS[item.kind]) - 2), "NO REPORT"))
            failed = True
            continue
        for r in item.reports:
            try:
                row = ROWS[item.kind](r)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise BadInput(f"{item.path}: a {item.kind} report without its {err} field; re-run the command "
                               "that wrote it") from None
            table.append(row)
            failed |= row[-1] in ("FAILED", "ERRORS")
            torch_version = r.get("torch_version") or (r.get("record") or {}).get("torch") or torch_version
    blocks = []
    for kind, header in HEADERS.items():
        if kind not in rows:
            continue
        table = [header, *rows[kind]]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
        blocks.append(("" if len(rows) == 1 else f"[{kind}]\n") + "\n".join(lines))
    text = "\n\n".join(blocks)
    if torch_version:
        text += f"\n(torch {torch_version}, device cpu)"
    return text, failed
