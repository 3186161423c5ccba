"""Parse ``TORCH_LOGS=graph_breaks,recompiles`` text into counted, attributed events.

Dynamo logs the first break at a site as ``Graph break in user code at
FILE:LINE`` and repeats as ``Graph break (user stack suppressed due to
duplicate graph break) in user code at FILE:LINE``; both are counted.
Recompiles appear as ``Recompiling function F in FILE:LINE`` followed by the
guard failures.  Hitting the recompile limit (after which Dynamo silently runs
the frame eagerly) is logged with ``recompile_limit``.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

_BREAK = re.compile(r"Graph break (?:\(user stack suppressed due to duplicate graph break\) )?in user code at (?P<file>.+?):(?P<line>\d+)\s*$")
_REASON = re.compile(r"Graph Break Reason: (?P<reason>.+?)\s*$")
_RECOMPILE = re.compile(r"Recompiling function (?P<func>\S+) in (?P<file>.+?):(?P<line>\d+)\s*$")
_GUARD = re.compile(r"^\s*-\s*(?P<guard>\S+: .+?)\s*$")
_LIMIT = re.compile(r"recompile_limit|cache_size_limit", re.I)
_LIMIT_FUNC = re.compile(r"^\s*function: '(?P<func>[^']+)' \((?P<file>.+?):(?P<line>\d+)\)\s*$")
_LIMIT_REASON = re.compile(r"^\s*last reason: (?P<reason>.+?)\s*$")
#: before each traffic call, on stderr (``traffic_runner``): the log lines that follow are that call's
CALL_MARK = "@@patchkit-call "
#: a guard failure's user line, as Dynamo comments it: ``# <code>  # <path>:<line> in <function>``
_GUARD_SITE = re.compile(r"#\s*(?P<code>.*?)\s+#\s*(?P<file>\S+\.py):(?P<line>\d+) in (?P<func>\w+)")
_PREFIX = re.compile(r"^[VIWE]\d{4} [\d:.]+ \d+ \S+\] (?:\[[^\]]*\] )*(?:\[__\w+\] )?")


@dataclass(frozen=True)
class Site:
    file: str  # relative to the tree when inside it, else absolute
    line: int
    function: str
    count: int
    reason: str

    def to_json(self) -> dict:
        return {"site": f"{self.file}:{self.line}", "function": self.function, "count": self.count, "reason": self.reason}


@dataclass(frozen=True)
class LogSummary:
    graph_breaks: int
    break_sites: tuple[Site, ...]
    recompiles: int
    recompile_sites: tuple[Site, ...]
    recompile_limit_hit: bool
    lines: tuple[str, ...] = field(default=())
    #: functions that hit the recompile limit (Dynamo runs them eagerly from then on), with the last guard
    limit_sites: tuple[Site, ...] = field(default=())


@lru_cache(maxsize=256)
def _functions(path: str) -> tuple[tuple[int, int, str], ...]:
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return ()
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            spans.append((node.lineno, node.end_lineno or node.lineno, node.name))
    return tuple(spans)


def function_at(path: str, line: int) -> str:
    """Innermost function containing ``line`` in ``path`` ('' when unknown)."""
    best = ""
    best_len = 1 << 30
    for start, end, name in _functions(path):
        if start <= line <= end and end - start < best_len:
            best, best_len = name, end - start
    return best


def _relative(file: str, tree: Path | None) -> str:
    if tree is not None:
        try:
            return Path(file).resolve().relative_to(tree.resolve()).as_posix()
        except ValueError:
            pass
    return file


def parse(text: str, tree: Path | None = None) -> LogSummary:
    breaks: Counter[tuple[str, int]] = Counter()
    reasons: dict[tuple[str, int], str] = {}
    recompiles: Counter[tuple[str, int, str]] = Counter()
    guards: dict[tuple[str, int, str], str] = {}
    limit = False
    kept = []
    last_break: tuple[str, int] | None = None
    last_recompile: tuple[str, int, str] | None = None
    pending_reason: tuple[str, int] | None = None
    limits: list[list] = []  # [file, line, func, reason]
    in_limit = False
    for raw in text.splitlines():
        line = _PREFIX.sub("", raw)
        if in_limit and (m := _LIMIT_FUNC.match(line)):
            limits.append([m["file"], int(m["line"]), m["func"], ""])
            continue
        if in_limit and limits and (m := _LIMIT_REASON.match(line)):
            limits[-1][3] = m["reason"]
            in_limit = False
            continue
        if m := _BREAK.search(line):
            key = (m["file"], int(m["line"]))
            breaks[key] += 1
            last_break, last_recompile = key, None
            kept.append(line)
        elif (m := _REASON.search(line)) and last_break is not None:
            if m["reason"].startswith("Encountered graph break when attempting"):
                pending_reason = last_break  # the specific reason follows on the next text line
            else:
                reasons.setdefault(last_break, m["reason"])
            last_break = None
        elif pending_reason is not None and line.strip():
            reasons.setdefault(pending_reason, line.strip())
            pending_reason = None
        elif m := _RECOMPILE.search(line):
            key3 = (m["file"], int(m["line"]), m["func"])
            recompiles[key3] += 1
            last_recompile, last_break = key3, None
            kept.append(line)
        elif last_recompile is not None and (m := _GUARD.match(line)):
            guards.setdefault(last_recompile, re.split(r"\s{2,}#", m["guard"])[0].strip())
            last_recompile = None
        if _LIMIT.search(line) and ("hit config" in line or "exceeded" in line.lower() or "limit reached" in line.lower()):
            limit = True
            in_limit = True
            kept.append(line)
    break_sites = tuple(
        Site(_relative(f, tree), ln, function_at(f, ln), n, reasons.get((f, ln), ""))
        for (f, ln), n in sorted(breaks.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    recompile_sites = tuple(
        Site(_relative(f, tree), ln, fn, n, guards.get((f, ln, fn), ""))
        for (f, ln, fn), n in sorted(recompiles.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    limit_counts: Counter[tuple[str, int, str]] = Counter((f, ln, fn) for f, ln, fn, _ in limits)
    last_reason = {(f, ln, fn): r for f, ln, fn, r in limits}
    limit_sites = tuple(Site(_relative(f, tree), ln, fn, n, last_reason[(f, ln, fn)])
                        for (f, ln, fn), n in sorted(limit_counts.items()))
    return LogSummary(sum(breaks.values()), break_sites, sum(recompiles.values()), recompile_sites, limit, tuple(kept),
                      limit_sites)


@dataclass(frozen=True)
class Event:
    """One thing Dynamo logged about one traffic call (``call``: its index; None before the first call mark).

    ``kind``: ``break`` (``detail``: the reason), ``recompile`` (``detail``: the first failing guard) or ``limit``
    (``detail``: the last guard).  ``file``/``line``/``function``: where it happened, relative to the tree when
    inside it; for a recompile whose guard Dynamo traced to a user line, that line (``code``: its source), else the
    recompiled function."""

    call: int | None
    kind: str
    file: str
    line: int
    function: str
    detail: str
    code: str = ""


def _guard_event(call: int | None, guard: str, file: str, line: int, func: str, tree: Path | None) -> Event:
    text = re.split(r"\s{2,}#", guard)[0].strip()
    m = _GUARD_SITE.search(guard)
    site = _resolve_tail(m["file"], tree) if m else None
    if m is None or site is None:  # no user line, or one outside the tree: the recompiled function
        return Event(call, "recompile", _relative(file, tree), line, func, text)
    return Event(call, "recompile", site, int(m["line"]), m["func"], text, m["code"].strip())


def _resolve_tail(shown: str, tree: Path | None) -> str | None:
    """Dynamo shortens a guard's path from the left (``mp/ws/vendor/...``): the file below ``tree`` it names."""
    if tree is None:
        return None
    parts = Path(shown).parts
    for k in range(len(parts)):
        if tree.joinpath(*parts[k:]).is_file():
            return Path(*parts[k:]).as_posix()
    return None


def events(text: str, tree: Path | None = None) -> list[Event]:
    """Every break, recompile and recompile-limit hit in a traffic log, with the call that met it."""
    out: list[Event] = []
    call: int | None = None
    pending: tuple | None = None  # a break or recompile whose reason or guard follows on a later line
    in_limit: list | None = None
    for raw in text.splitlines():
        if raw.startswith(CALL_MARK):
            call, pending, in_limit = int(raw[len(CALL_MARK):]), None, None
            continue
        line = _PREFIX.sub("", raw)
        if in_limit is not None:
            if m := _LIMIT_FUNC.match(line):
                in_limit[:] = [m["file"], int(m["line"]), m["func"]]
                continue
            if (m := _LIMIT_REASON.match(line)) and in_limit:
                f, ln, fn = in_limit
                out.append(Event(call, "limit", _relative(f, tree), ln, fn, m["reason"]))
                in_limit = None
                continue
        if pending and pending[0] == "recompile" and not _GUARD.match(line) and "triggered by" not in line:
            pending = None
        if m := _BREAK.search(line):
            pending = ("break", m["file"], int(m["line"]), "")
        elif pending and pending[0] == "break" and (m := _REASON.search(line)):
            if m["reason"].startswith("Encountered graph break when attempting"):
                pending = ("break-reason-next", *pending[1:])
            else:
                f, ln = pending[1], pending[2]
                out.append(Event(call, "break", _relative(f, tree), ln, function_at(f, ln), m["reason"]))
                pending = None
        elif pending and pending[0] == "break-reason-next" and line.strip():
            f, ln = pending[1], pending[2]
            out.append(Event(call, "break", _relative(f, tree), ln, function_at(f, ln), line.strip()))
            pending = None
        elif m := _RECOMPILE.search(line):
            pending = ("recompile", m["file"], int(m["line"]), m["func"])
        elif pending and pending[0] == "recompile" and (m := _GUARD.match(line)):
            if m["guard"].startswith("User stack trace"):
                continue
            guard = re.sub(r"^\d+/\d+: ", "", m["guard"])  # one line per cache entry that failed: each a guard
            out.append(_guard_event(call, guard, pending[1], pending[2], pending[3], tree))
        if _LIMIT.search(line) and ("hit config" in line or "exceeded" in line.lower()
                                    or "limit reached" in line.lower()):
            in_limit = []
    return out
