"""Where a benchmark result came from: the commit, and any uncommitted change to the library
(``cli/``, ``vae_anomaly/``), recorded in each results JSON. Imported by the scripts beside it."""

from __future__ import annotations

import subprocess
from pathlib import Path


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
