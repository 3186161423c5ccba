"""Ahead-of-time packages of the patched models: ``patchkit export`` and loading them back.

``export`` runs the patch set's programs (the harness's ``export_programs``:
each compiled unit with dynamic dims bounded by the model's real limits)
through ``torch.export.export`` and AOTInductor in a subprocess with the
patched tree first on ``sys.path``, and writes one ``.pt2`` archive: every
program plus a record (``extra/patchkit.json``) naming the upstream (version,
archive hash or commit), the patch-set hash, torch version, device, size,
weights source, the programs' ranges and the model config the runtime needs.
The archive is written to a temporary file beside ``--out`` and renamed into
place: a finished package or nothing.

``load_package`` reads the record first (without loading any compiled code),
refuses a package from another torch version or patch set (``PackageMismatch``,
exit 2) or a damaged one (``CorruptPackage``, exit 2), then loads each program.
The loaded package builds the upstream's entry point (``.entry_point()``).
Running it involves no Dynamo: nothing is traced or compiled in that process.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import EXIT_INTERNAL, BadInput, EnvironmentProblem, PatchkitError, subprocess_failure
from .errors import OutsideRange as OutsideRange  # the runtimes' range error, public as patchkit.aot.OutsideRange
from .patchset import PatchSet
from .provenance import ArtifactKind, Provenance
from .workspace import Workspace, publish

RECORD_FORMAT = 1
RECORD_NAME = "patchkit.json"  # inside the archive's extra/ folder (see verify/export_runner.py)


class PackageMismatch(BadInput):
    """The package was built for another torch, patch set, model or device."""


class CorruptPackage(BadInput):
    """Not a readable patchkit ``.pt2`` package."""


class ExportFailed(PatchkitError):
    """``torch.export`` or AOTInductor failed on the patched model: the patch set needs work (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class ExportResult:
    model: str
    path: str
    bytes: int
    seconds: float
    record: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_out(ws: Workspace, model: str, size: str, device: str) -> Path:
    return ws.root / "dist" / f"{model}-{size}-{device.split(':')[0]}.pt2"


def export(ws: Workspace, ps: PatchSet, *, size: str = "tiny", weights: str | None = None, device: str = "cpu",
           out: str | Path | None = None, timeout: int = 7200, progress=lambda msg: None) -> ExportResult:
    from .apply import require_applied
    from .provenance import patch_hash

    if ps.aot_runtime is None:
        raise BadInput(f"{ps.model}: its patch set declares no ahead-of-time export yet")
    path = Path(out) if out else default_out(ws, ps.model, size, device)
    if path.suffix != ".pt2":
        raise BadInput(f"--out {str(path)!r}: a package file name must end in .pt2")
    if path.is_dir():
        raise BadInput(f"--out {str(path)!r} is a directory; give a file name ending in .pt2")
    if out and not path.parent.is_dir():
        raise BadInput(f"--out {str(path)!r}: folder {str(path.parent)!r} does not exist (create it first)")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise EnvironmentProblem(f"--device {device}: not applicable on this machine (torch sees no CUDA "
                                     "device); nothing was exported")
    lock = require_applied(ws, ps)
    record = {
        "format": RECORD_FORMAT,
        "model": ps.model,
        "upstream": {"version": lock["version"], **lock["source"]},  # package or repo, archive hash or commit
        "patch_hash": patch_hash(lock),
        # kronos: MODEL_DIR,TOKENIZER_DIR; verify --aot rebuilds the reference from it
        "weights_path": ",".join(str(Path(w).resolve()) for w in weights.split(",")) if weights else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    made_dist = not path.parent.exists()
    tree = ws.patched(ps.model)
    t0 = time.perf_counter()
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".pt2.partial", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        with tempfile.TemporaryDirectory(prefix="patchkit-export-") as work:
            rec_file = Path(work) / "record.json"
            rec_file.write_text(json.dumps(record))
            # written under its final name, so the archive's folder is the package's name, not a temporary one
            built = Path(work) / path.name
            cmd = [sys.executable, "-m", "patchkit.verify.export_runner", ps.model, str(tree), str(built),
                   str(rec_file), "--size", size, "--device", device]
            if weights:
                cmd += ["--weights", weights]
            progress(f"{ps.model} ({size}, {device}): torch.export + AOTInductor, one program at a time")
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
            from .verify.report import stream
            from .verify.runner import PHASE_MARK

            def on_line(line: str) -> None:
                if line.startswith(PHASE_MARK):
                    progress(f"{ps.model}: {line[len(PHASE_MARK):].strip()}")

            proc = stream(cmd, env=env, timeout=timeout, cwd=work, on_line=on_line)
            if proc.returncode != 0 or not built.is_file():
                error = subprocess_failure(f"export of the patched {ps.model}", proc.returncode, proc.stderr,
                                           f"export-{ps.model}")
                if error.exit_code == EXIT_INTERNAL and error.kind:  # torch.export / AOTInductor refused the model
                    raise ExportFailed(str(error)) from None
                raise error
            record = json.loads(rec_file.read_text())
            shutil.copyfile(built, tmp)
        read_record(tmp)  # what was written reads back
        publish(tmp, path)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if made_dist and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()  # a failed first export leaves no empty dist/
    return ExportResult(ps.model, str(path), path.stat().st_size, round(time.perf_counter() - t0, 2), record)


def read_record(path: str | Path) -> dict[str, Any]:
    """The package's patchkit record, read from the archive without loading compiled code."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{str(path)!r}: no such package file")
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(f"/extra/{RECORD_NAME}")]
            if not names:
                raise CorruptPackage(f"{path}: not a patchkit package (no extra/{RECORD_NAME} in the archive)")
            record = json.loads(zf.read(names[0]))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as err:
        raise CorruptPackage(f"{path}: not a readable .pt2 package ({type(err).__name__}: {err})") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise CorruptPackage(f"{path}: package record format {record.get('format') if isinstance(record, dict) else '?'}"
                             f", this patchkit reads format {RECORD_FORMAT}")
    return record


#: how a package's refusals read (patchkit.provenance)
PACKAGE = ArtifactKind("exported", "with", "re-export it with `patchkit export {model}`", PackageMismatch)


def check_record(record: dict[str, Any], path: str | Path, *, patch_hash: str | None, model: str | None = None) -> None:
    """Refuse a package built for another torch, patch set or model, or for a device this process lacks."""
    Provenance.of(record).check(path, PACKAGE, patch_hash=patch_hash, model=model)


def _installed_patch_hash(model: str) -> str | None:
    """The patch-set hash of the importable patched package (``patchkit install``), if it is one."""
    from . import patches
    from .distribute import installed_provenance

    record, _ = installed_provenance(patches.get(model))
    return record.get("patch_hash") if record else None


class LoadedPackage:
    """A checked package with its programs loaded; ``entry_point()`` builds the upstream's entry point."""

    def __init__(self, path: Path, record: dict[str, Any], programs: dict[str, Any], load_s: float) -> None:
        self.path, self.record, self.programs, self.load_s = path, record, programs, load_s
        #: calls per program, so a check can tell which programs a workload reached
        self.calls: dict[str, int] = dict.fromkeys(programs, 0)

    @property
    def model(self) -> str:
        return self.record["model"]

    def program(self, name: str):
        compiled, calls = self.programs[name], self.calls

        def run(*args):
            calls[name] += 1
            return compiled(*args)

        return run

    def entry_point(self, *args, **kwargs):
        """The upstream's own entry point running this package: a ``Chronos2Pipeline`` (chronos2), a
        ``TotoForecaster`` (toto), a ``KronosPredictor`` over the caller's model and tokenizer (kronos)."""
        from . import patches
        from .patchset import resolve

        return resolve(patches.get(self.model).aot_runtime)(self, *args, **kwargs)


def _loader_folders() -> set[Path]:
    """The folders torch's package loader unpacks programs into (``$TMPDIR/aotinductor_*``), owned by this user."""
    uid = os.getuid()
    return {p for p in Path(tempfile.gettempdir()).glob("aotinductor_*") if p.is_dir() and p.stat().st_uid == uid}


def load_package(path: str | Path, *, patch_hash: str | None = None, model: str | None = None) -> LoadedPackage:
    """Load a ``patchkit export`` package after checking its record.

    ``patch_hash``: the patch set it must come from (default: the installed patched package's, when the
    importable package is a patchkit build; otherwise the patch set is not checked).
    """
    t0 = time.perf_counter()
    path = Path(path)
    record = read_record(path)
    if patch_hash is None and record.get("model"):
        patch_hash = _installed_patch_hash(record["model"])
    check_record(record, path, patch_hash=patch_hash, model=model)
    from torch._inductor.package import load_package as _load

    before = _loader_folders()
    try:  # each program carries its weights (stored once outside the code, torch 2.13's loader crashed at size)
        programs = {name: _load(str(path), model_name=name) for name in record.get("programs", {})}
    except Exception as err:  # noqa: BLE001 - whatever the loader raises, the archive is unusable
        for folder in _loader_folders() - before:  # what the failed load unpacked is of no further use
            shutil.rmtree(folder, ignore_errors=True)
        raise CorruptPackage(f"{path}: its programs do not load ({type(err).__name__}: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})") from None
    if not programs:
        raise CorruptPackage(f"{path}: the package record names no programs")
    return LoadedPackage(path, record, programs, time.perf_counter() - t0)
