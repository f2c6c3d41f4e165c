"""One checkpoint as one table row: train (or reuse) its content-addressed folder through the trainer resource and
describe it with the numbers a person checks (steps, time, loss curve, where the GGUF is)."""

import json

import dagster as dg
import numpy as np
import pandas as pd

from dsc_assets.defs.stage import version_metadata
from dsc_assets.defs.steps import partition_task, training_progress
from dsc_assets.lib.plots import line_plot
from dsc_assets.lib.samples import data_version
from resources.datasets import load_records
from resources.hashing import content_hash
from resources.settings import METHODS, SEEDED, DscSettings
from resources.trainer import LoRATrainer

CHECKPOINT_COLUMNS = [
    "task",
    "method",
    "status",
    "train_rows",
    "steps",
    "seconds",
    "first_loss",
    "last_loss",
    "data_hash",
    "adapter_dir",
    "merged_dir",
    "gguf_path",
    "settings",  # JSON: what this training read after the profile's and the task's overrides, seed included
]


# A skipped checkpoint's row: nothing trained, nothing written.
SKIPPED = {
    "steps": 0,
    "seconds": 0.0,
    "first_loss": np.nan,
    "last_loss": np.nan,
    "adapter_dir": "",
    "merged_dir": "",
    "gguf_path": "",
    "settings": "",
}


def dataset_records(df: pd.DataFrame) -> list[dict]:
    """The training records, read back from the versioned Hugging Face dataset folder the table points at."""
    return load_records(df["dataset_path"].iloc[0]) if len(df) else []


def _trained_metadata(task: str, method: str, checkpoint, rows: int, data_hash: str, trainer: LoRATrainer) -> dict:
    """What a person checks on a checkpoint: where it is, its steps and time, its data, its settings, its loss curve."""
    summary, losses = checkpoint.summary, checkpoint.summary["losses"]
    metadata = {
        "path": dg.MetadataValue.path(str(checkpoint.folder)),
        "gguf": dg.MetadataValue.path(summary["gguf_path"]),
        "steps": dg.MetadataValue.int(summary["steps"]),
        "train_seconds": dg.MetadataValue.float(summary["seconds"]),
        "train_rows": dg.MetadataValue.int(rows),
        "data_hash": dg.MetadataValue.text(data_hash),
        "trainer": dg.MetadataValue.json(trainer.method_settings(method)),
        "precision": dg.MetadataValue.text(" — ".join(trainer.precision())),
    }
    if summary.get("step_seconds"):  # checkpoints trained before it was recorded have none
        metadata["seconds_per_step"] = dg.MetadataValue.float(summary["step_seconds"])
    if losses:
        metadata["loss_curve"] = line_plot(losses, f"{task} {method}: training loss", "step", "loss")
        metadata["first_loss"], metadata["last_loss"] = float(losses[0]), float(losses[-1])
    return metadata


def checkpoint_output(
    context: dg.AssetExecutionContext,
    trainer: LoRATrainer,
    settings: DscSettings,
    method: str,
    records: list[dict],
    train=None,
    seeds: int | None = None,
) -> dg.Output[pd.DataFrame]:
    """Train (or reuse) one checkpoint folder per training seed and describe each in one table row, first seed first.

    ``train(trainer, dataset, output_dir)`` trains a method that brings its own step (ALMoST); ``seeds`` defaults
    to the profile's training seeds for the task (``SEEDED`` methods; others train once). Seed k trains with the
    trainer's seed + k; the first seed is the trainer as it is, so a profile of one seed keeps every folder, version
    and table it had before seeds existed."""
    task = partition_task(context)
    versions = version_metadata(context, task)
    trainer = trainer.with_overrides(task.spec.trainer.overrides())  # task.yaml trainer: (preference losses only)
    data_hash = content_hash(records, length=16)
    row = {"task": task.name, "method": method, "train_rows": len(records), "data_hash": data_hash}
    off = method in METHODS and not settings.builds(method)
    if off or not records:
        status = "skipped: not in the profile's methods" if off else "skipped: empty dataset"
        (context.log.info if off else context.log.warning)(f"{task.name}: {method} checkpoint {status}")
        df = pd.DataFrame([{**row, "status": status, **SKIPPED}], columns=CHECKPOINT_COLUMNS)
        return dg.Output(df, data_version=data_version(df), metadata={"status": status, **versions})
    count = seeds if seeds is not None else (settings.seeds_for(task.name) if method in SEEDED else 1)
    rows, trained = [], []
    for k in range(count):
        seeded = trainer if k == 0 else trainer.with_overrides({"seed": trainer.seed + k})
        version = content_hash(method, data_hash, seeded.settings_identity(method), length=16)
        label = f"{task.name}: {method} checkpoint {version}" + (
            f" (seed {seeded.seed}, {k + 1}/{count})" if count > 1 else ""
        )
        checkpoint = _train_one(context, seeded, settings, method, task.name, version, records, train, label)
        settings_json = json.dumps(seeded.method_settings(method), sort_keys=True)
        rows.append({**row, **_checkpoint_row(checkpoint.summary), "settings": settings_json})
        trained.append((seeded, version, checkpoint))
    df = pd.DataFrame(rows, columns=CHECKPOINT_COLUMNS)
    if count > 1:
        df["seed"] = [seeded.seed for seeded, _, _ in trained]
    first, version, checkpoint = trained[0]
    metadata = {**_trained_metadata(task.name, method, checkpoint, len(records), data_hash, first), **versions}
    if count > 1:
        metadata["seeds"] = dg.MetadataValue.int(count)
        metadata["last_loss_by_seed"] = dg.MetadataValue.json(
            {str(s.seed): c.summary["losses"][-1] if c.summary["losses"] else None for s, _, c in trained}
        )
        version = content_hash(*(v for _, v, _ in trained), length=16)
    return dg.Output(df, data_version=dg.DataVersion(version), metadata=metadata)


def _train_one(context, trainer: LoRATrainer, settings, method: str, task: str, version: str, records, train, label):
    """One training seed's checkpoint folder: reused when finished, else trained and exported."""
    folder = settings.artifact_path("checkpoints", method, task, version)
    dtype, why = trainer.precision()
    context.log.info(f"{label}: trainer precision {dtype} ({why})")
    fit = None if train is None else (lambda dataset, output_dir: train(trainer, dataset, output_dir))
    with training_progress(context, label):
        checkpoint = trainer.checkpoint(method, folder, f"{task}-{method}.gguf", records, train=fit)
    if checkpoint.reused:
        context.log.info(f"{label}: reusing {folder}")
    return checkpoint


def _checkpoint_row(summary: dict) -> dict:
    losses = summary["losses"]
    return {
        "status": "trained",
        "steps": summary["steps"],
        "seconds": summary["seconds"],
        "first_loss": losses[0] if losses else np.nan,
        "last_loss": losses[-1] if losses else np.nan,
        "adapter_dir": summary["adapter_dir"],
        "merged_dir": summary["merged_dir"],
        "gguf_path": summary["gguf_path"],
    }
