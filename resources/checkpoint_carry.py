"""Finished checkpoints carried from one home to another without their big files.

A checkpoint folder holds its LoRA adapter (a few MB), the merged model (the whole student, hundreds of MB) and the
GGUF the evaluation serves. ``pack`` copies each finished folder's adapter and ``summary.json`` and records the
sha256 of its GGUF (and of a reward model's merged weights); ``unpack`` copies them into another home and rebuilds
the merged model and the GGUF from the adapter on the same base, then checks the rebuilt GGUF against the recorded
sha256: the evaluation's cached answers are keyed by the GGUF's bytes, so a checkpoint rebuilt bit for bit gets them
back from the cache, and one that differs is said (its answers are generated again; nothing else changes).

A folder is content-addressed (method, data, settings) and finished when ``summary.json`` exists (written last, as
in resources/checkpoints.py), so an unpacked checkpoint is reused by the next run exactly like one trained there.
ALMoST's RL adapter sits on its SFT checkpoint's merged model: unpacking rebuilds that one first."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from resources.hashing import file_sha256

MANIFEST = "manifest.json"
MERGED_WEIGHTS = "model.safetensors"


class CarryError(ValueError):
    """A pack or unpack that cannot go on: the message names the folder and what is wrong."""


@dataclass
class Carried:
    path: str  # <method>/<task>/<version>
    status: str  # packed, unpacked, already there, rebuilt with other bytes, skipped: ...

    def __str__(self) -> str:
        return f"{self.path}: {self.status}"


def finished_folders(checkpoints: Path, tasks: list[str] | None = None) -> list[Path]:
    """Every finished checkpoint folder under ``checkpoints`` (<method>/<task>/<version>/summary.json)."""
    found = sorted(p.parent for p in checkpoints.glob("*/*/*/summary.json")) if checkpoints.is_dir() else []
    return [folder for folder in found if not tasks or folder.parent.name in tasks]


def pack(checkpoints: Path, out: Path, tasks: list[str] | None = None) -> list[Carried]:
    """Adapters and summaries of the finished checkpoints (of ``tasks``, or all) into ``out``, with a manifest of
    the sha256 each rebuilt file must have; entries already in ``out``'s manifest are kept."""
    manifest_file = out / MANIFEST
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else {}
    carried = []
    for folder in finished_folders(checkpoints, tasks):
        relative = folder.relative_to(checkpoints).as_posix()
        summary = json.loads((folder / "summary.json").read_text())
        adapter = Path(summary.get("adapter_dir") or folder / "adapter")
        if not (adapter / "adapter_config.json").exists():
            carried.append(Carried(relative, f"skipped: no LoRA adapter in {adapter}"))
            continue
        target = out / relative
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(adapter, target / "adapter")
        (target / "summary.json").write_text(json.dumps(summary))
        gguf, merged = summary.get("gguf_path"), Path(summary.get("merged_dir") or folder / "merged")
        manifest[relative] = {
            "folder": str(folder),  # where it was: the summary's paths and the RL adapter's base name it
            "gguf_sha256": file_sha256(gguf) if gguf and Path(gguf).exists() else None,
            "merged_sha256": None if gguf else _merged_sha(merged),  # a reward model serves its merged weights
        }
        carried.append(Carried(relative, "packed"))
    out.mkdir(parents=True, exist_ok=True)
    manifest_file.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return carried


def _merged_sha(merged: Path) -> str | None:
    weights = merged / MERGED_WEIGHTS
    return file_sha256(str(weights)) if weights.exists() else None


def unpack(source: Path, checkpoints: Path, trainer) -> list[Carried]:
    """The packed checkpoints of ``source`` into ``checkpoints``: adapters copied, merged models and GGUFs rebuilt by
    ``trainer`` (a LoRATrainer on the same student) and checked against the packed sha256s. A folder already
    finished there is left as it is."""
    manifest_file = source / MANIFEST
    if not manifest_file.exists():
        raise CarryError(f"{source}: no {MANIFEST} (write one with `dsc checkpoints pack --to {source}`)")
    manifest = json.loads(manifest_file.read_text())
    moved = {entry["folder"]: str(checkpoints / path) for path, entry in manifest.items()}  # old folder -> new
    carried = []
    for path in _bases_first(source, manifest):
        entry, folder = manifest[path], checkpoints / path
        if (folder / "summary.json").exists():
            carried.append(Carried(path, "already there"))
            continue
        carried.append(Carried(path, _rebuild(source / path, folder, entry, moved, trainer)))
    return carried


def _adapter_base(packed: Path) -> str:
    config = json.loads((packed / "adapter" / "adapter_config.json").read_text())
    return str(config.get("base_model_name_or_path") or "")


def _bases_first(source: Path, manifest: dict) -> list[str]:
    """The manifest's paths, each after the checkpoint its adapter was trained on (RL after its SFT)."""
    merged_of = {str(Path(e["folder"]) / "merged"): path for path, e in manifest.items()}
    order: list[str] = []

    def visit(path: str, seen: tuple[str, ...] = ()) -> None:
        if path in order or path in seen:
            return
        base = merged_of.get(_adapter_base(source / path))
        if base is not None:
            visit(base, (*seen, path))
        order.append(path)

    for path in sorted(manifest):
        if not (source / path / "adapter" / "adapter_config.json").exists():
            raise CarryError(f"{source / path}: the manifest names it, but its adapter is missing")
        visit(path)
    return order


def _relocated(value: str, old: str, new: str) -> str:
    return new + value[len(old) :] if value.startswith(old) else value


def _rebuild(packed: Path, folder: Path, entry: dict, moved: dict[str, str], trainer) -> str:
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():  # a killed unpack's leftovers
        shutil.rmtree(partial)
    shutil.copytree(packed / "adapter", partial / "adapter")
    summary = json.loads((packed / "summary.json").read_text())
    old = entry["folder"]
    base = _adapter_base(packed)
    base_dir = next((_relocated(base, o, n) for o, n in moved.items() if base.startswith(o + "/")), None)
    trainer.merge_adapter(str(partial / "adapter"), base_dir, str(partial / "merged"))
    status = "unpacked"
    if summary.get("gguf_path"):
        gguf = partial / Path(summary["gguf_path"]).name
        trainer.export_gguf(str(partial / "merged"), str(gguf))
        expected, sha = entry.get("gguf_sha256"), file_sha256(str(gguf))
    else:
        expected, sha = entry.get("merged_sha256"), _merged_sha(partial / "merged")
    if expected and sha != expected:
        status = (
            f"rebuilt with other bytes (sha256 {sha[:12]}, packed {expected[:12]}): the evaluation answers "
            "with it again instead of from the cache"
        )
    for key in ("adapter_dir", "merged_dir", "gguf_path"):
        if summary.get(key):
            summary[key] = _relocated(str(summary[key]), old, str(folder))
    (partial / "summary.json").write_text(json.dumps(summary))  # written last, as a trained folder's
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(folder)
    return status
