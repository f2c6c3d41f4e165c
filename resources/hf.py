"""The student as a Hugging Face folder: read from its GGUF once (transformers dequantizes it) and kept under the
GGUF's sha256, so later loads take a fraction of a second. Everything offline."""

from __future__ import annotations

import os
from pathlib import Path

from resources.artifacts import build_once


def quiet_progress() -> None:
    """Offline, and no progress bars from datasets (every hub library is told it is offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:
        pass


def hf_student(gguf_path: Path, sha256: str, cache_dir: Path) -> Path:
    """A Hugging Face copy of a GGUF model, made once under ``cache_dir/hf/<sha>`` (by one process: others wait and
    reuse it; see artifacts.py)."""
    target = cache_dir / "hf" / sha256[:16]
    build_once(target, lambda partial: _save_hf_copy(gguf_path, partial), lambda path: (path / "config.json").exists())
    return target


def _save_hf_copy(gguf_path: Path, out: Path) -> None:
    quiet_progress()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # transformers marks a GGUF-loaded model as quantized; it is dequantized already, so save it as plain weights.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
