"""Checkpoints carried between homes as their adapters (resources/checkpoint_carry.py, `dsc checkpoints`): real
trainings on the 135M student (an SFT, a reward model, an RL step on the SFT's merged model), packed without their
merged models and GGUFs, unpacked into another home and rebuilt there bit for bit, then reused as trained ones."""

from __future__ import annotations

import json
import shutil

import pytest
from datasets import Dataset

from resources.checkpoint_carry import CarryError, pack, unpack
from resources.checkpoints import train_or_reuse
from resources.hashing import file_sha256
from resources.trainer import LoRATrainer

SYSTEM = {"role": "system", "content": "You write short movie reviews."}
FILMS = ("Up", "Alien", "Heat", "Jaws")
GOOD = "A warm, well-acted film with a moving score."


def _trainer(models) -> LoRATrainer:
    return LoRATrainer(
        base_model="smollm2-135m",
        model_cache_dir=str(models),
        max_steps=2,
        per_device_batch_size=2,
        grad_accum=1,
        max_length=96,
        learning_rate=1e-3,
        rl_num_generations=2,
        rl_max_completion_length=8,
    )


def _train_home(trainer: LoRATrainer, checkpoints) -> dict:
    """An SFT checkpoint, a reward model and an RL checkpoint on the SFT's merged model, as the graph lays them out."""
    sft_rows = [
        {"messages": [SYSTEM, {"role": "user", "content": f"Review {f}."}, {"role": "assistant", "content": GOOD}]}
        for f in FILMS
    ]
    sft = trainer.checkpoint("sft", checkpoints / "sft" / "t" / "v1", "t-sft.gguf", sft_rows)
    pairs = [
        {
            "prompt": [SYSTEM, {"role": "user", "content": f"Review {f}."}],
            "chosen": [{"role": "assistant", "content": GOOD}],
            "rejected": [{"role": "assistant", "content": "bad bad bad"}],
        }
        for f in FILMS
    ]
    rm_folder = checkpoints / "reward_model" / "t" / "v2"
    rm = train_or_reuse(rm_folder, lambda: trainer.train_reward_model(Dataset.from_list(pairs), str(rm_folder)))

    def rl(dataset, output_dir):
        reward = lambda prompts, completions, **_: [float(len(str(c))) for c in completions]  # noqa: E731
        return trainer.train_rl(dataset, sft.summary["merged_dir"], reward, output_dir)

    prompts = [{"prompt": [SYSTEM, {"role": "user", "content": f"Review {f}."}]} for f in FILMS[:2]]
    rl_checkpoint = trainer.model_copy(update={"max_steps": 1}).checkpoint(
        "almost_rl", checkpoints / "almost_rl" / "t" / "v3", "t-almost_rl.gguf", prompts, train=rl
    )
    return {"sft": sft, "rm": rm, "rl": rl_checkpoint}


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    root = tmp_path_factory.mktemp("carry")
    trainer = _trainer(root / "models")
    trained = _train_home(trainer, root / "a" / "checkpoints")
    return root, trainer, trained


def test_unpacked_checkpoints_are_rebuilt_bit_for_bit_and_reused(homes):
    root, trainer, trained = homes
    packed = pack(root / "a" / "checkpoints", root / "packed")
    assert sorted(str(c) for c in packed) == [
        "almost_rl/t/v3: packed",
        "reward_model/t/v2: packed",
        "sft/t/v1: packed",
    ]
    carried = sum(f.stat().st_size for f in (root / "packed").rglob("*") if f.is_file())
    assert carried < 25e6  # three adapters and a manifest, no merged model (~500 MB) and no GGUF (~130 MB)
    assert not list((root / "packed").rglob("*.gguf")) and not list((root / "packed").rglob("merged"))

    target = root / "b" / "checkpoints"
    results = unpack(root / "packed", target, trainer)
    order = [c.path for c in results]
    assert order.index("sft/t/v1") < order.index("almost_rl/t/v3")  # the RL adapter sits on the SFT's merged model
    assert {c.status for c in results} == {"unpacked"}, [str(c) for c in results]
    for name, method in (("sft", "sft/t/v1"), ("rl", "almost_rl/t/v3")):
        gguf = target / method / f"t-{method.split('/')[0]}.gguf"
        assert file_sha256(str(gguf)) == file_sha256(trained[name].summary["gguf_path"])
        summary = json.loads((target / method / "summary.json").read_text())
        assert summary["gguf_path"] == str(gguf) and summary["merged_dir"] == str(target / method / "merged")
        assert summary["losses"] == trained[name].summary["losses"]
    again = train_or_reuse(target / "sft" / "t" / "v1", lambda: pytest.fail("an unpacked checkpoint retrained"))
    assert again.reused
    assert [c.status for c in unpack(root / "packed", target, trainer)] == ["already there"] * 3


def test_a_rebuild_with_other_bytes_is_said_and_a_missing_adapter_is_an_error(homes):
    root, trainer, _ = homes
    pack(root / "a" / "checkpoints", root / "packed2", tasks=["t"])
    manifest = json.loads((root / "packed2" / "manifest.json").read_text())
    manifest["sft/t/v1"]["gguf_sha256"] = "0" * 64  # as if packed from another build
    (root / "packed2" / "manifest.json").write_text(json.dumps(manifest))
    results = {c.path: c.status for c in unpack(root / "packed2", root / "c" / "checkpoints", trainer)}
    assert results["sft/t/v1"].startswith("rebuilt with other bytes")
    assert results["reward_model/t/v2"] == "unpacked"
    shutil.rmtree(root / "packed2" / "reward_model" / "t" / "v2" / "adapter")
    with pytest.raises(CarryError, match="reward_model/t/v2: the manifest names it, but its adapter is missing"):
        unpack(root / "packed2", root / "d" / "checkpoints", trainer)
    assert pack(root / "a" / "checkpoints", root / "none", tasks=["other"]) == []
