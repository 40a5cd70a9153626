"""Where a benchmark result came from: the commit, and any uncommitted change to the library
(``cli/``, ``vae_anomaly/``), recorded in each results JSON; and the command that runs the CLI of a
given source tree. Imported by the scripts beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Import ROOT's vae_anomaly (on PYTHONPATH) and its cli/ folder as vae_anomaly.cli, as the installed
# package does (pyproject package-dir), then run the Typer app; ROOT is the first argument.
_BOOT = (
    "import sys, importlib.util as u; from pathlib import Path; r = Path(sys.argv.pop(1)); "
    "s = u.spec_from_file_location('vae_anomaly.cli', r / 'cli' / '__init__.py', "
    "submodule_search_locations=[str(r / 'cli')]); m = u.module_from_spec(s); "
    "sys.modules['vae_anomaly.cli'] = m; s.loader.exec_module(m); "
    "import vae_anomaly; vae_anomaly.cli = m; sys.argv[0] = 'vae-anomaly'; "
    "from vae_anomaly.cli.main import main; main()"
)


def source_cli(root: Path, **env: str) -> tuple[list[str], dict[str, str]]:
    """(command prefix, environment) that run ``vae-anomaly`` from the source tree ``root`` (a
    checkout or a snapshot such as ``git archive HEAD | tar -x -C DIR``) with this interpreter,
    whatever vae_anomaly is installed; ``env`` adds variables (e.g. OMP_NUM_THREADS="1")."""
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return [sys.executable, "-c", _BOOT, str(root)], {**os.environ, "PYTHONPATH": path, **env}


def _git(root: Path, *args: str) -> str | None:
    """Output of a git command in ``root``, or None outside a git checkout."""
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_state(root: Path) -> dict:
    """{"commit": HEAD's hash, "worktree_changes": `git status --porcelain` of cli/ and vae_anomaly/}
    (None for either outside a git checkout)."""
    return {"commit": _git(root, "rev-parse", "HEAD"),
            "worktree_changes": _git(root, "status", "--porcelain", "--untracked-files=no", "--", "cli", "vae_anomaly")}
