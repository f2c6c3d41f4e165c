"""Export of a merged fine-tuned model back to GGUF for llama.cpp: the student's GGUF with every fine-tuned weight
replaced (in F16) and all else (tokenizer, chat template, untouched quantized tensors) copied as it was."""

from __future__ import annotations

import json
from pathlib import Path

from resources.artifacts import build_once

# LoRA targets that are plain linear weights in llama.cpp's tensor naming: what export has to rewrite.
GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _permute(weights, n_head: int):
    """llama.cpp's row order for q/k (transformers undoes it on GGUF load; we redo it)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def load_safetensors(folder: Path) -> dict:
    """Every tensor of a saved model or adapter folder, as torch tensors in their saved dtype (torch reads bfloat16, a
    GPU run's weights; safetensors.numpy cannot)."""
    from safetensors.torch import load_file

    state = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(str(shard)))
    return state


def gguf_replacements(state: dict, config: dict, target_modules: list[str], layers=None) -> dict:
    """The fine-tuned weights of a merged state as llama.cpp tensors: GGUF name -> F16 array, q/k rows in llama.cpp's
    order. ``layers``: which layers (default every one)."""
    import numpy as np

    replaced: dict[str, np.ndarray] = {}
    for layer in range(config["num_hidden_layers"]) if layers is None else layers:
        for hf_name, gguf_name in GGUF_NAMES.items():
            if hf_name.split(".")[-1] not in target_modules:
                continue
            weight = state[f"model.layers.{layer}.{hf_name}.weight"].float().numpy()
            if gguf_name == "attn_q":
                weight = _permute(weight, config["num_attention_heads"])
            elif gguf_name == "attn_k":
                weight = _permute(weight, config["num_key_value_heads"])
            replaced[f"blk.{layer}.{gguf_name}.weight"] = weight.astype(np.float16)
    return replaced


def export_merged_gguf(base_gguf: Path, merged_dir: Path, out_path: Path, target_modules: list[str]) -> None:
    """Write ``out_path`` once (a process that finds it written, or being written, reuses it; see artifacts.py)."""
    build_once(out_path, lambda partial: _write_gguf(base_gguf, merged_dir, partial, target_modules))


def _write_gguf(base_gguf: Path, merged_dir: Path, partial: Path, target_modules: list[str]) -> None:
    import gguf

    reader = gguf.GGUFReader(str(base_gguf))
    config = json.loads((merged_dir / "config.json").read_text())
    replaced = gguf_replacements(load_safetensors(merged_dir), config, target_modules)
    architecture = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(str(partial), architecture)
    for item in reader.fields.values():
        if item.name == gguf.Keys.General.ARCHITECTURE or item.name.startswith("GGUF."):
            continue
        value_type = item.types[0]
        sub_type = item.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(item.name, item.contents(), value_type, sub_type=sub_type)
    for tensor in reader.tensors:
        if tensor.name in replaced:
            data = replaced[tensor.name]
            writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, gguf.GGMLQuantizationType.F16)
        else:
            writer.add_tensor_info(
                tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(replaced.get(tensor.name, tensor.data), tensor_endianess=reader.endianess)
    writer.close()
