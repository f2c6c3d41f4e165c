"""trainer.dtype: what ``auto`` resolves to, that it is remembered per machine, and that a checkpoint's identity holds
the resolved name (resources/precision.py)."""

from __future__ import annotations

import json

import pytest

from resources import precision
from resources.trainer import LoRATrainer


def test_a_named_dtype_is_taken_as_given_and_an_unknown_one_is_refused():
    assert precision.resolve("float32", "cpu") == ("float32", "set in the profile")
    assert precision.resolve("bf16-mixed", "cpu")[0] == "bf16-mixed"
    with pytest.raises(ValueError, match="trainer.dtype must be one of auto, float32, bf16-mixed"):
        precision.resolve("fp8", "cpu")


def test_auto_is_decided_once_per_machine_and_the_identity_holds_the_decision(tmp_path):
    resolved, why = precision.resolve("auto", "cpu", tmp_path)
    assert resolved in ("float32", "bf16-mixed") and why
    if {"amx_bf16", "avx512_bf16"} & precision.cpu_flags():
        memo = json.loads((tmp_path / "precision.json").read_text())
        [rates] = memo.values()
        assert rates["float32"] > 0 and rates["bfloat16"] > 0  # the probe ran and was remembered
        (tmp_path / "precision.json").write_text(json.dumps({k: {"float32": 1.0, "bfloat16": 9.0} for k in memo}))
        assert precision.resolve("auto", "cpu", tmp_path)[0] == "bf16-mixed"  # read back, not measured again
    else:
        assert resolved == "float32" and "no bf16 matrix units" in why
    trainer = LoRATrainer(dtype="auto", model_cache_dir=str(tmp_path))
    assert json.loads(trainer.settings_identity("sft"))["dtype"] == trainer.precision()[0] != "auto"


def test_how_the_reference_is_computed_is_not_a_checkpoints_identity():
    plain, faster = LoRATrainer(), LoRATrainer(dpo_precompute_ref=False, dpo_fused_head=False, save_every_steps=0)
    assert plain.settings_identity("dpo") == faster.settings_identity("dpo")  # nor how often its state is kept
    assert plain.settings_identity("dpo") != LoRATrainer(dtype="bf16-mixed").settings_identity("dpo")
