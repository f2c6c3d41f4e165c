"""ALMoST's two trainings on the LoRATrainer's settings: the reward model (a scalar head) and RL from synthetic
feedback (RLOO). Functions of the trainer resource (``owner``), kept apart from resources/trainer.py to keep each
file short."""

from __future__ import annotations

import time

from resources.hf import quiet_progress
from resources.train_result import NothingToTrain, TrainResult


def train_reward_model(owner, dataset, output_dir: str) -> TrainResult:
    """ALMoST's reward model: the student with a scalar head, LoRA, TRL's RewardTrainer (pairwise
    −log σ(r_chosen − r_rejected)) on conversational ``prompt``/``chosen``/``rejected`` rows."""
    quiet_progress()
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(owner.base_dir()))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(owner.seed)  # the scalar head starts random
    model = AutoModelForSequenceClassification.from_pretrained(
        str(owner.base_dir()), num_labels=1, dtype=owner._weights_dtype()
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    lora = LoraConfig(
        r=owner.lora_r,
        lora_alpha=owner.lora_alpha,
        lora_dropout=owner.lora_dropout,
        target_modules=list(owner.target_modules),
        task_type="SEQ_CLS",
        modules_to_save=["score"],
    )
    started = time.perf_counter()
    # TRL's configs default to gradient checkpointing (and bf16 where not set): both slow a CPU down.
    args = RewardConfig(**owner._common_args(output_dir), gradient_checkpointing=False)
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=dataset.select_columns(["prompt", "chosen", "rejected"]),
        processing_class=tokenizer,
        peft_config=lora,
    )
    if len(trainer.train_dataset) == 0:  # TRL drops every pair longer than max_length before training
        raise NothingToTrain(
            f"all {len(dataset)} comparisons are longer than trainer.max_length={owner.max_length} tokens "
            "(TRL's RewardTrainer drops those); raise trainer.max_length in the profile or cap the answers "
            "(max_tokens_cap)"
        )
    owner._train(trainer, output_dir)
    return owner._finish(trainer, tokenizer, output_dir, started, len(dataset))


def train_rl(owner, prompts, policy_dir: str, reward_function, output_dir: str) -> TrainResult:
    """ALMoST's RL from synthetic feedback: RLOO (TRL 1.16 has no PPO) from the SFT policy in ``policy_dir``,
    LoRA on top of it, so the KL reference (adapter off) is the SFT policy; the reward is ``reward_function``."""
    quiet_progress()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import RLOOConfig, RLOOTrainer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation pads on the left
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=owner._weights_dtype())
    common = owner._common_args(output_dir)
    common.pop("max_length")
    # One optimizer step = one group of k samples for each of batch prompts; k must divide the batch.
    common.update(per_device_train_batch_size=owner.rl_num_generations, gradient_accumulation_steps=1)
    args = RLOOConfig(
        **common,
        num_generations=owner.rl_num_generations,
        beta=owner.rl_beta,
        max_completion_length=owner.rl_max_completion_length,
        gradient_checkpointing=False,
        temperature=0.7,
        log_completions=False,
    )
    started = time.perf_counter()
    trainer = RLOOTrainer(
        model=model,
        reward_funcs=reward_function,
        args=args,
        train_dataset=prompts.select_columns(["prompt"]),
        processing_class=tokenizer,
        peft_config=owner._lora(),
    )
    owner._train(trainer, output_dir)
    return owner._finish(trainer, tokenizer, output_dir, started, len(prompts))
