"""Shared artifacts, built once: the student's Hugging Face copy, exported GGUFs, the exported base, datasets,
checkpoints, the assembled teacher, the llama.cpp wheel. Several processes (two `dsc run` in one new DSC_HOME, a
UI run beside a CLI run) may ask for the same one at once.

``build_once`` takes a lock on a sibling file (``.<name>.lock``, held with ``flock``: the kernel releases it when
its holder dies, even by ``kill -9``); the first process builds into ``<name>.partial-<pid>`` and renames it into
place; the others wait, find it done, and reuse it. Partials of dead builders are removed by the next builder.
Standard library only: the llama.cpp build uses it before any dependency is installed."""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def lock_file(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


@contextmanager
def artifact_lock(target: Path) -> Iterator[None]:
    """Hold ``target``'s build lock: waits while another process holds it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file(target), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def partials(target: Path) -> list[Path]:
    return [Path(p) for p in glob.glob(f"{glob.escape(str(target))}.partial*")]


def build_once(target: Path, build: Callable[[Path], None], done: Callable[[Path], bool] | None = None) -> bool:
    """Make ``target`` (a file or a folder) with ``build(partial)`` unless ``done(target)`` (default: it exists);
    True when this process built it. A build that raises leaves no partial and no target."""
    done = done or Path.exists
    if done(target):
        return False
    with artifact_lock(target):
        if done(target):  # another process built it while this one waited
            return False
        for stale in partials(target):  # the lock is ours: a partial is a dead builder's
            _remove(stale)
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        try:
            build(partial)
            if target.exists():  # a leftover that is not done (a folder without its last file)
                _remove(target)
            os.replace(partial, target)
        finally:
            if partial.exists():
                _remove(partial)
    return True
