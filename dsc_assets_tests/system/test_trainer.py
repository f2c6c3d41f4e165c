"""LoRA training on the real 135M student: loss goes down, the merged model exports to GGUF and runs in llama.cpp."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from resources.llm import LlamaCppLLM, SamplingParams
from resources.train_result import TRAINING_PROGRESS
from resources.trainer import LoRATrainer

SYSTEM = {"role": "system", "content": "You are a cheerful film critic."}
FILMS = ["Jaws", "Titanic", "Alien", "Heat", "Up", "Cars"]


def _trainer(tmp_path, **overrides) -> LoRATrainer:
    settings = dict(
        model_cache_dir=str(tmp_path.parent / "shared_models"),
        device="cpu",
        max_steps=6,
        per_device_batch_size=2,
        grad_accum=1,
        learning_rate=3e-3,
        max_length=96,
        lora_r=8,
    )
    return LoRATrainer(**{**settings, **overrides})


def _sft_rows() -> list[dict]:
    return [
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": f"Review {film}."},
                {"role": "assistant", "content": f"{film} is a delight: warm, funny and beautifully made."},
            ]
        }
        for film in FILMS
    ]


PROGRESS: list[str] = []


@pytest.fixture(scope="module")
def sft_result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    trainer = _trainer(tmp)
    token = TRAINING_PROGRESS.set(PROGRESS.append)  # what the checkpoint asset routes into the run log
    try:
        return trainer, trainer.train_sft(Dataset.from_list(_sft_rows()), str(tmp / "sft")), tmp
    finally:
        TRAINING_PROGRESS.reset(token)


def test_sft_steps_reduce_training_loss(sft_result):
    _, result, _ = sft_result
    assert result.steps == 6 and len(result.losses) == 6
    assert np.mean(result.losses[-2:]) < 0.7 * np.mean(result.losses[:2])


def test_a_training_reports_its_progress_at_the_first_and_the_last_step(sft_result):
    _, result, _ = sft_result
    assert PROGRESS[0].startswith("step 1/6, loss ") and PROGRESS[-1].startswith("step 6/6, loss ")
    assert f"loss {result.losses[-1]:.3f}" in PROGRESS[-1] and PROGRESS[-1].endswith("~0.0 min left")


def test_rdpo_steps_reduce_training_loss(tmp_path):
    rows = [
        {
            "prompt": [SYSTEM, {"role": "user", "content": f"Review {film}."}],
            "chosen": [{"role": "assistant", "content": f"{film} is wonderful and moving."}],
            "rejected": [{"role": "assistant", "content": f"{film} is dull garbage."}],
            "score_chosen": 0.9,
            "score_rejected": -0.8,
        }
        for film in FILMS
    ]
    result = _trainer(tmp_path, learning_rate=5e-3).train_dpo(
        Dataset.from_list(rows), str(tmp_path / "rdpo"), loss="rdpo"
    )
    assert result.steps == 6
    assert result.losses[0] == pytest.approx(np.log(2), abs=0.05)  # the policy starts as the reference: h = 0
    assert np.mean(result.losses[-2:]) < result.losses[0]


def test_exported_gguf_loads_in_llama_cpp_and_matches_the_merged_model(sft_result):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer, result, tmp = sft_result
    path = trainer.export_gguf(result.merged_dir, str(tmp / "student-sft.gguf"))
    llm = LlamaCppLLM(cache_path=str(tmp / "cache.duckdb"), model=path, n_ctx=512)
    text = llm.chat(
        [SYSTEM, {"role": "user", "content": "Review Heat."}], SamplingParams(temperature=0, max_tokens=16)
    ).text
    assert text.strip()
    # The same next-token choice from the HF merged model and from the exported GGUF (q/k permutation is right).
    tokenizer = AutoTokenizer.from_pretrained(result.merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    prompt = tokenizer.apply_chat_template(
        [SYSTEM, {"role": "user", "content": "Review Up."}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hf_logits = merged(torch.tensor([ids])).logits[0, -1].numpy()
    llama = llm.llama(logits_all=True)
    llama.reset()
    llama.eval(ids)
    gguf_logits = np.asarray(llama.scores[len(ids) - 1])
    assert int(np.argmax(gguf_logits)) == int(np.argmax(hf_logits))
    assert np.corrcoef(gguf_logits, hf_logits)[0, 1] > 0.98


def test_a_bfloat16_merged_model_exports_like_its_float32_original(sft_result):
    """A GPU run (dtype bfloat16) saves bfloat16 weights, which numpy cannot read: the export read them through
    safetensors.numpy and failed ('data type bfloat16 not understood'). Same weights in bf16: same GGUF tensors,
    to bf16's precision."""
    import shutil

    import gguf
    from safetensors.torch import load_file, save_file

    trainer, result, tmp = sft_result
    bf16_dir = tmp / "merged-bf16"
    shutil.copytree(result.merged_dir, bf16_dir, dirs_exist_ok=True)
    for shard in bf16_dir.glob("*.safetensors"):
        save_file(
            {k: v.bfloat16().contiguous() for k, v in load_file(str(shard)).items()},
            str(shard),
            metadata={"format": "pt"},
        )
    f32 = gguf.GGUFReader(trainer.export_gguf(result.merged_dir, str(tmp / "from-f32.gguf")))
    bf16 = gguf.GGUFReader(trainer.export_gguf(str(bf16_dir), str(tmp / "from-bf16.gguf")))
    exported = {t.name: np.asarray(t.data, dtype=np.float32) for t in bf16.tensors if t.name.endswith("attn_q.weight")}
    assert len(exported) == 30  # every layer's fine-tuned q
    for tensor in f32.tensors:
        if tensor.name in exported:
            np.testing.assert_allclose(
                exported[tensor.name], np.asarray(tensor.data, dtype=np.float32), rtol=1e-2, atol=1e-3
            )


def test_sft_loss_covers_only_the_answer(tmp_path):
    """The first step's loss (LoRA B starts at zero: the base model) equals the base model's mean negative
    log-likelihood of the assistant tokens alone, not of the system and user text around them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": f"Review {film}."},
                {"role": "assistant", "content": f"{film} is a delight: warm and funny."},
            ]
        }
        for film in FILMS
    ]
    trainer = _trainer(tmp_path, max_steps=1, per_device_batch_size=len(rows), lora_dropout=0.0)
    logged = trainer.train_sft(Dataset.from_list(rows), str(tmp_path / "sft")).losses[0]

    tokenizer = AutoTokenizer.from_pretrained(str(trainer.base_dir()))
    model = AutoModelForCausalLM.from_pretrained(str(trainer.base_dir()), dtype=torch.float32).eval()

    def nll(prompt_only: bool) -> float:
        total, count = 0.0, 0
        for row in rows:
            full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
            start = (
                len(
                    tokenizer.apply_chat_template(
                        row["messages"][:-1], tokenize=True, add_generation_prompt=True, return_dict=True
                    )["input_ids"]
                )
                if prompt_only
                else 1
            )
            with torch.no_grad():
                logps = torch.log_softmax(model(torch.tensor([full])).logits[0, :-1].float(), dim=-1)
            targets = torch.tensor(full[1:])
            picked = -logps[torch.arange(len(targets)), targets]
            total, count = total + float(picked[start - 1 :].sum()), count + len(targets) - (start - 1)
        return total / count

    answer_only, whole_chat = nll(True), nll(False)
    assert abs(logged - answer_only) < 0.05 * answer_only, (logged, answer_only, whole_chat)
    assert abs(logged - whole_chat) > 0.1 * answer_only  # the two differ enough for this test to tell them apart


def test_the_sft_term_adds_the_chosen_answers_nll_to_every_preference_loss(tmp_path):
    """dpo_sft_weight w: the first step's loss is ln 2 (policy = reference) + w x the chosen answers' NLL per token."""
    rows = [
        {
            "prompt": [SYSTEM, {"role": "user", "content": f"Review {film}."}],
            "chosen": [{"role": "assistant", "content": f"{film} is wonderful and moving."}],
            "rejected": [{"role": "assistant", "content": f"{film} is dull garbage."}],
            "score_chosen": 0.9,
            "score_rejected": -0.8,
        }
        for film in FILMS
    ]
    first = {}
    for loss, weight in (("dpo", 0.0), ("dpo", 1.0), ("dpo", 2.0), ("rdpo", 1.0)):
        trainer = _trainer(tmp_path, max_steps=1, dpo_sft_weight=weight)
        result = trainer.train_dpo(Dataset.from_list(rows), str(tmp_path / f"{loss}{weight}"), loss=loss)
        first[loss, weight] = result.losses[0]
    nll = first["dpo", 1.0] - np.log(2)
    assert first["dpo", 0.0] == pytest.approx(np.log(2), abs=1e-4)
    assert nll > 0.5  # a 135M model does not know these sentences by heart
    assert first["dpo", 2.0] - np.log(2) == pytest.approx(2 * nll, rel=1e-3)
    assert first["rdpo", 1.0] == pytest.approx(first["dpo", 1.0], rel=1e-4)  # at h = 0 rDPO's term is ln 2 too


def _pairs(with_self_reward: bool = False) -> list[dict]:
    return [
        {
            "prompt": [SYSTEM, {"role": "user", "content": f"Review {film}."}],
            "chosen": [{"role": "assistant", "content": f"{film} is wonderful, warm and moving."}],
            "rejected": [{"role": "assistant", "content": f"{film} is dull garbage."}],
            **({"self_reward": 0.5 + 0.1 * n} if with_self_reward else {}),
        }
        for n, film in enumerate(FILMS)
    ]


@pytest.mark.parametrize("loss", ["dpo", "dlma"])
def test_reference_computed_once_and_the_fused_head_give_the_same_losses(tmp_path, loss):
    """The reference's log-probabilities computed once per dataset through TRL's fused LM head, and the policy's
    through it, give the losses of the reference recomputed every step through full logits: the same numbers."""
    losses = {}
    for once in (False, True):
        trainer = _trainer(tmp_path, max_steps=3, learning_rate=5e-3, dpo_sft_weight=1.0)
        trainer = trainer.with_overrides({"dpo_precompute_ref": once, "dpo_fused_head": once})
        result = trainer.train_dpo(Dataset.from_list(_pairs(loss == "dlma")), str(tmp_path / f"{once}"), loss=loss)
        losses[once] = result.losses
    assert len(losses[True]) == 3 and losses[True] == pytest.approx(losses[False], rel=2e-3)
    assert losses[True][-1] < losses[True][0]


@pytest.mark.skipif(
    not {"amx_bf16", "avx512_bf16"} & __import__("resources.precision").precision.cpu_flags(),
    reason="bf16 autocast on a CPU without bf16 units is emulated (about 10x slower); nothing to measure there",
)
def test_bf16_mixed_keeps_lora_weights_in_float32_and_learns_within_5_percent_of_float32(sft_result, tmp_path):
    from safetensors import safe_open

    trainer, float32, _ = sft_result
    mixed = trainer.with_overrides({"dtype": "bf16-mixed"}).train_sft(
        Dataset.from_list(_sft_rows()), str(tmp_path / "m")
    )
    assert mixed.precision == "bf16-mixed" and float32.precision == "float32"
    with safe_open(f"{mixed.adapter_dir}/adapter_model.safetensors", "pt") as adapter:
        assert {str(adapter.get_tensor(name).dtype) for name in adapter.keys()} == {"torch.float32"}
    assert mixed.losses[0] == pytest.approx(float32.losses[0], rel=0.01)  # the same model, rounded differently
    learned = {name: r.losses[0] - np.mean(r.losses[-2:]) for name, r in (("mixed", mixed), ("float32", float32))}
    assert learned["mixed"] > 0.8 * learned["float32"]  # at most a fifth less learned in 6 steps (bench: study size)
    assert np.mean(mixed.losses[-2:]) == pytest.approx(np.mean(float32.losses[-2:]), rel=0.05)
