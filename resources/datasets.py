"""Training sets as Hugging Face datasets in content-addressed folders: the same records always land in the same
folder, so an identical request finds its data already written."""

from __future__ import annotations

from pathlib import Path

from resources.artifacts import build_once
from resources.hashing import content_hash


def save_dataset(folder: Path, records: list[dict]) -> tuple[Path, str]:
    """Save records as a Hugging Face dataset under ``<folder>/<content hash>``; (path, hash)."""
    from datasets import Dataset

    digest = content_hash(records, length=16)
    path = folder / digest
    # content-addressed: a finished folder already holds this data (another process may be writing it: see artifacts.py)
    build_once(
        path,
        lambda partial: Dataset.from_list(records).save_to_disk(str(partial)),
        lambda folder: (folder / "dataset_info.json").exists(),
    )
    return path, digest


def load_records(path: str | Path) -> list[dict]:
    """The records of a dataset folder written by ``save_dataset``."""
    from datasets import load_from_disk

    return load_from_disk(str(path)).to_list()
