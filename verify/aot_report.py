"""``verify MODEL --aot PACKAGE``: an exported package against upstream eager, through the users' entry point.

The upstream (pristine) tree runs the traffic profile eagerly for the
reference outputs; a second process loads the package with
``patchkit.runtime.load_package`` and runs the same calls through the
upstream-style object it builds (``Chronos2Pipeline`` ...).  The profile's
batches, lengths and horizons are not the shapes the export traced, so this is
also the check on unseen shapes within the exported ranges.

It fails when a call errors, an output differs from upstream eager by more than
``AOT_RTOL`` relative L2 (or puts NaN elsewhere), or the package's process
traced or compiled anything (Dynamo's counters must stay at zero).  A call whose
shape is outside the package's exported ranges is refused by the runtime with
``OutsideRange`` naming the range, before any program runs: such calls are
listed as ``refused`` (and left out of the comparison), not counted as errors;
any other exception is a failure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from patchkit.errors import OutsideRange
from patchkit.patchset import PatchSet

from .traffic import percentiles
from .traffic_report import FidelityCheck, _check, fidelity_failure, run_traffic

#: how a runtime refuses a shape outside the exported ranges, as the runner records it (``Type: message``)
REFUSED = OutsideRange.__name__


def split_refused(errors: list[dict]) -> tuple[list[dict], list[dict]]:
    """A pass's recorded call errors as (refused as outside the package's ranges, any other error)."""
    refused = [e for e in errors if e["error"].startswith(f"{REFUSED}:")]
    return refused, [e for e in errors if e not in refused]

#: exported program vs upstream eager (the issue's bound: compiled code may reorder float sums)
AOT_RTOL = 1e-5


@dataclass(frozen=True)
class AOTReport:
    model: str
    package: str
    torch_version: str
    upstream_version: str
    patch_hash: str
    size: str
    parameters: int
    device: str
    programs: dict[str, Any]
    calls: list[dict]
    load_s: float
    program_calls: dict[str, int]
    latency: dict[str, Any]
    dynamo: dict[str, Any]
    call_errors: list[dict]
    #: calls the runtime refused as outside the exported ranges (OutsideRange), with its message
    refused: list[dict]
    fidelity: list[FidelityCheck]
    ok: bool
    failures: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def verify_aot(ps: PatchSet, upstream_tree: Path, patched_tree: Path, package: Path, *, patch_hash: str,
               record: dict[str, Any], calls: int = 24, seed: int = 0, timeout: int = 7200,
               progress=lambda msg: None) -> tuple[AOTReport, dict[str, str]]:
    size, device = record["size"], record["device"]
    weights = record.get("weights_path")
    progress(f"{ps.model} upstream: {calls} calls eager (the reference)")
    up = run_traffic(ps, Path(upstream_tree).resolve(), "upstream", "eager", size=size, calls=calls, seed=seed,
                     weights=weights, device=device, backend="eager", timeout=timeout)
    up_data, up_arrays, up_log = up.data, up.arrays, up.log
    progress(f"{ps.model} package {package}: the same calls, no compiling")
    pk = run_traffic(ps, Path(patched_tree).resolve(), "package", "aot", size=size, calls=calls, seed=seed,
                     weights=weights, device=device, backend="eager", timeout=timeout,
                     extra_args=("--package", str(Path(package).resolve()), "--patch-hash", patch_hash))
    pk_data, pk_arrays, pk_log = pk.data, pk.arrays, pk.log
    aot_pass = pk_data["passes"]["aot"]
    refused, errors = split_refused(aot_pass["errors"])
    skip = {e["index"] for e in refused}
    call_list = [c for c in pk_data["calls"] if c["index"] not in skip]
    checks = [
        _check("package vs upstream eager (deterministic outputs)", AOT_RTOL, pk_arrays["aot"], up_arrays["eager"],
               call_list, "point"),
        _check("package vs upstream eager (sampled paths, same seed)", AOT_RTOL, pk_arrays["aot"],
               up_arrays["eager"], call_list, "samples"),
    ]
    fidelity = [c for c in checks if c is not None]
    counters = pk_data.get("aot_counters", {})
    failures: list[str] = []
    for e in errors[:3]:
        failures.append(f"package call {e['call']} raised {e['error']}")
    if len(errors) > 3:
        failures.append(f"... and {len(errors) - 3} more package call error(s) (see call_errors)")
    for e in up_data["passes"]["eager"]["errors"]:
        failures.append(f"upstream eager call {e['call']} raised {e['error']} (the profile must be valid input)")
    program_calls = aot_pass.get("program_calls", {})
    unreached = sorted(name for name, n in program_calls.items() if not n)
    if unreached:
        failures.append(f"the profile never ran program(s) {', '.join(unreached)}: their outputs are unchecked "
                        "(more --calls, or a profile that reaches them)")
    if counters.get("graphs") or counters.get("frames_ok"):
        failures.append(f"the package's process compiled {counters.get('graphs')} graph(s): it must run without "
                        "Dynamo")
    failures += [fidelity_failure(c) for c in fidelity if not c.ok]
    if not fidelity:
        failures.append("no output to compare: the harness returned neither point forecasts nor samples")
    up_times = [t for c, t in zip(pk_data["calls"], up_data["passes"]["eager"]["times_s"])
                if t == t and c["index"] not in skip]  # the calls the package ran
    pk_times = [t for t in aot_pass["times_s"] if t == t]
    latency = {"upstream_eager": percentiles(up_times), "package": percentiles(pk_times)}
    if latency["package"]["calls"] and latency["upstream_eager"]["calls"]:
        latency["speedup_p50_vs_upstream_eager"] = latency["upstream_eager"]["p50_s"] / latency["package"]["p50_s"]
    report = AOTReport(
        model=ps.model, package=str(package), torch_version=pk_data["torch_version"],
        upstream_version=record["upstream"]["version"], patch_hash=record["patch_hash"], size=size,
        parameters=int(pk_data["parameters"]), device=device, programs=record["programs"], calls=pk_data["calls"],
        load_s=float(aot_pass["load_s"]), program_calls=program_calls, latency=latency, dynamo=counters,
        call_errors=errors, refused=refused, fidelity=fidelity, ok=not failures, failures=failures,
    )
    return report, {"upstream": up_log, "package": pk_log}
