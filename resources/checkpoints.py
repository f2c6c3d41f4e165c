"""Checkpoints as content-addressed folders: trained once per (data, settings), exported, then reused.

A folder is finished when its ``summary.json`` exists; it is written last, so a killed run leaves no "finished"
marker and the next run trains again."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from resources.artifacts import artifact_lock


@dataclass
class Checkpoint:
    folder: Path
    summary: dict[str, Any]  # steps, seconds, losses, and the folders/files training wrote
    reused: bool


def train_or_reuse(
    folder: Path, train: Callable[[], Any], export: Callable[[Any], dict[str, str]] | None = None
) -> Checkpoint:
    """The finished checkpoint in ``folder``, or train one there: ``train()`` returns a TrainResult; ``export(result)``
    writes what the checkpoint serves (a GGUF) and returns the paths to record."""
    summary_file = folder / "summary.json"
    if summary_file.exists():  # same data, same settings: this checkpoint exists already
        return Checkpoint(folder, json.loads(summary_file.read_text()), True)
    with artifact_lock(folder):  # one process trains it; another asking for it meanwhile waits, then reuses it
        if summary_file.exists():
            return Checkpoint(folder, json.loads(summary_file.read_text()), True)
        if folder.exists():  # a killed run's unfinished folder: its kept training state stays, to resume from
            for child in folder.iterdir():
                if child.name != "trainer":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        return _train(folder, summary_file, train, export)


def _train(folder: Path, summary_file: Path, train, export) -> Checkpoint:
    started = time.perf_counter()
    result = train()
    exported = export(result) if export is not None else {}
    summary = {
        "steps": result.steps,
        "seconds": round(time.perf_counter() - started, 2),
        "losses": result.losses,
        "precision": result.precision,
        "step_seconds": result.step_seconds,
        "adapter_dir": str(result.adapter_dir),
        "merged_dir": str(result.merged_dir),
        **exported,
    }
    folder.mkdir(parents=True, exist_ok=True)
    summary_file.write_text(json.dumps(summary))  # written last: a killed run leaves no "finished" marker
    return Checkpoint(folder, summary, False)
