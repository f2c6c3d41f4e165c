"""Training sets as Hugging Face datasets in content-addressed folders: the same records always land in the same
folder, so an identical request finds its data already written."""

from __future__ import annotations

from pathlib import Path

from resources.hashing import content_hash


def save_dataset(folder: Path, records: list[dict]) -> tuple[Path, str]:
    """Save records as a Hugging Face dataset under ``<folder>/<content hash>``; (path, hash)."""
    from datasets import Dataset

    digest = content_hash(records, length=16)
    path = folder / digest
    if not (path / "dataset_info.json").exists():  # content-addressed: an existing folder already holds this data
        partial = path.with_name(digest + ".partial")
        Dataset.from_list(records).save_to_disk(str(partial))
        partial.rename(path)
    return path, digest


def load_records(path: str | Path) -> list[dict]:
    """The records of a dataset folder written by ``save_dataset``."""
    from datasets import load_from_disk

    return load_from_disk(str(path)).to_list()
