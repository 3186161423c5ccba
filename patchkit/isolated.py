"""Per-target virtual environments for ``upgrade-check --isolated``.

A release is checked in an environment that holds *its own* declared
requirements (``Requires-Dist``, or requirements.txt for git models), with torch
pinned to the version running here, plus what patchkit's verify runner and the
upstream tests need.  So a baseline failure caused by, say, transformers 5 next
to a release that declares ``transformers<5`` disappears, and what is left is
the release's own.

Environments are cached under ``$PATCHKIT_CACHE/envs`` (default
``~/.cache/patchkit/envs``), one per model, version and requirement set; a
partly built one (no ``.ready`` marker) is rebuilt.  patchkit itself is not
installed there: a ``.pth`` file points at a fresh copy of the running
package's sources, so the environment never runs a stale patchkit.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import EnvironmentProblem

#: what patchkit's verify runner and the upstream test runs import, besides the target's own requirements
RUNNER_REQUIREMENTS = ("libcst>=1.1", "click>=8.1", "gitpython>=3.1", "packaging>=23", "numpy>=1.24",
                       "statsmodels>=0.14", "pytest>=8")
_PACKAGES = ("patchkit", "patchkit.codemods", "patchkit.patches", "patchkit.verify")


def cache_root() -> Path:
    return Path(os.environ.get("PATCHKIT_CACHE") or Path.home() / ".cache" / "patchkit")


@dataclass(frozen=True)
class IsolatedEnv:
    path: Path
    python: Path
    #: the requirement lines installed (the target's, with torch pinned, plus the runner's)
    requirements: tuple[str, ...]
    #: True when this call built it, False when the cached one was reused
    built: bool

    @property
    def label(self) -> str:
        return f"isolated ({self.path.name})"

    def installed(self) -> dict[str, str]:
        """Normalised distribution name -> version, as the environment's own interpreter sees them."""
        code = ("import importlib.metadata as m, json; print(json.dumps({d.metadata['Name'].lower().replace('_', '-'):"
                " d.version for d in m.distributions() if d.metadata['Name']}))")
        proc = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise EnvironmentProblem(f"isolated environment {self.path} does not start: {proc.stderr.strip()[-200:]}")
        return json.loads(proc.stdout)


def target_requirements(requirements: list[str], extras: tuple[str, ...], torch_version: str) -> list[str]:
    """The target's base requirements and those of ``extras``, markers evaluated for this interpreter,
    with every torch requirement replaced by ``torch==<torch_version>``."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = [f"torch=={torch_version}"]
    for line in requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            continue
        if req.name.lower() == "torch":
            continue
        text = f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}{req.specifier}"
        if text not in out:
            out.append(text)
    return out


def _pip(python: Path, args: list[str], what: str, log: Path) -> None:
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        lines = [x for x in log.read_text().splitlines() if x.strip() and not x.startswith("$ ")]
        error = next((x for x in reversed(lines) if x.startswith("ERROR")), lines[-1] if lines else "no output")
        raise EnvironmentProblem(f"{what} failed: {error.strip()[:300]} (log: {log})")


def _link_patchkit(env: Path, python: Path) -> None:
    """Copy the running patchkit's sources into the environment and put them on its path."""
    src = env / "patchkit-src"
    shutil.rmtree(src, ignore_errors=True)
    for name in _PACKAGES:
        module = importlib.import_module(name)
        dest = src.joinpath(*name.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for path in Path(module.__path__[0]).glob("*.py"):
            shutil.copy2(path, dest / path.name)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "patchkit-src.pth").write_text(str(src) + "\n")


def ensure_env(model: str, version: str, requirements: list[str], *, extras: tuple[str, ...] = (),
               runner_extra: tuple[str, ...] = (), progress: Callable[[str], None] = lambda msg: None) -> IsolatedEnv:
    """The cached environment for ``model`` ``version``, built first when missing."""
    import torch

    torch_version = torch.__version__.split("+")[0]
    reqs = target_requirements(requirements, extras, torch_version)
    runner = [*RUNNER_REQUIREMENTS, *runner_extra]
    key = hashlib.sha256(json.dumps([model, version, reqs, runner, sys.version_info[:2]]).encode()).hexdigest()[:10]
    safe_version = "".join(c if c.isalnum() or c in ".-_" else "_" for c in version)[:40]
    env = cache_root() / "envs" / f"{model}-{safe_version}-py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    python = env / "bin" / "python"
    built = False
    if not (env / ".ready").exists():
        built = True
        shutil.rmtree(env, ignore_errors=True)
        env.parent.mkdir(parents=True, exist_ok=True)
        progress(f"creating isolated environment {env}")
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, capture_output=True)
        log = env / "pip.log"
        constraints = env / "constraints.txt"
        constraints.write_text(f"torch=={torch_version}\n")
        progress(f"installing torch=={torch_version} (the running version), {model} {version}'s own "
                 f"requirements ({len(reqs) - 1}) and the runner's ({len(runner)}); pip log: {log}")
        _pip(python, ["install", "-c", str(constraints), *reqs, *runner],
             f"installing {model} {version}'s requirements", log)
        (env / "requirements.txt").write_text("\n".join([*reqs, *runner]) + "\n")
        (env / ".ready").write_text("ok\n")
    else:
        progress(f"reusing isolated environment {env}")
    _link_patchkit(env, python)
    return IsolatedEnv(env, python, (*reqs, *runner), built)
