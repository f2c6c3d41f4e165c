"""Which code made a table: the checkout's commit, recorded with every materialization and printed by reports."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from dsc_assets.lib.paths import PROJECT_ROOT


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """HEAD, marked dirty when tracked files differ from it (untracked files, such as new reports, do not count)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" (dirty)" if status.stdout.strip() else "")


@functools.lru_cache(maxsize=1)
def code_commit() -> str:
    """The commit of the code this process loaded (asked once: a long-lived code server keeps the code it loaded,
    whatever the checkout moves to later). Recorded with every materialization; `dsc report` prints it."""
    return git_commit()
