"""A training killed midway resumes from the last state it kept (``trainer.save_every_steps``), not from nothing, and
ends where an unbroken training of the same checkpoint ends: the study's ALMoST RL is 256 steps of ~25 s."""

from __future__ import annotations

import pytest
from safetensors.numpy import load_file

from resources.trainer import LoRATrainer

SYSTEM = {"role": "system", "content": "You write short movie reviews."}
FILMS = ("Up", "Alien", "Heat", "Jaws", "Rocky", "Fargo", "Psycho", "Vertigo")


class Killed(Exception):
    """What a crash or a kill mid-training looks like to the checkpoint: the training stops, nothing is finished."""


def _rows() -> list[dict]:
    answer = "A warm, well-acted film with a moving score and a story that stays with you."
    return [
        {"messages": [SYSTEM, {"role": "user", "content": f"Review {f}."}, {"role": "assistant", "content": answer}]}
        for f in FILMS
    ]


def _adapter(checkpoint) -> dict:
    return load_file(f"{checkpoint.summary['adapter_dir']}/adapter_model.safetensors")


def test_a_training_killed_after_a_kept_state_resumes_there_and_ends_where_an_unbroken_one_ends(
    tmp_path, monkeypatch, capsys
):
    from transformers import TrainerCallback

    trainer = LoRATrainer(
        model_cache_dir=str(tmp_path / "models"),
        max_steps=4,
        save_every_steps=2,
        per_device_batch_size=2,
        grad_accum=1,
        max_length=96,
        learning_rate=1e-3,
    )
    unbroken = trainer.checkpoint("sft", tmp_path / "a" / "v1", "a.gguf", _rows())

    class KillAtStep3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Killed()

    prepare = LoRATrainer._prepare
    monkeypatch.setattr(LoRATrainer, "_prepare", lambda self, t: (prepare(self, t), t.add_callback(KillAtStep3())))
    folder = tmp_path / "b" / "v1"
    with pytest.raises(Killed):
        trainer.checkpoint("sft", folder, "b.gguf", _rows())
    assert (folder / "trainer" / "checkpoint-2").is_dir() and not (folder / "summary.json").exists()
    monkeypatch.undo()
    capsys.readouterr()
    resumed = trainer.checkpoint("sft", folder, "b.gguf", _rows())
    assert "resuming the training from checkpoint-2" in capsys.readouterr().out
    assert resumed.summary["steps"] == unbroken.summary["steps"] == 4 and not resumed.reused
    assert resumed.summary["losses"] == pytest.approx(unbroken.summary["losses"], rel=1e-4)
    ours, theirs = _adapter(resumed), _adapter(unbroken)
    assert sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        assert abs(ours[name] - tensor).max() <= 1e-5, name
    assert not (folder / "trainer").exists()  # a finished checkpoint keeps no training state
