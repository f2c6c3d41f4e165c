"""Training overhead: the pipeline's LoRATrainer resource vs a bare TRL script, side by side in one run.

    python bench/training.py [--pairs 32] [--steps 8] [--rounds 2]

Both sides fine-tune the same student (SmolLM2-135M, dequantized from its GGUF into a cached HF folder) with the
same LoRA settings, data, seed and step count, and both end with a usable checkpoint (adapter saved, adapter merged,
merged model saved). The bare side is what a person would write by hand with TRL: SFTTrainer for SFT and the stock
DPOTrainer (sigmoid loss) for DPO. The resource's DPO path goes through dsc's DPOTrainer subclass (own loss, own
collator for the score columns), which is exactly the overhead worth measuring. Rounds alternate in ABBA order so
machine drift hits both sides alike. Prints seconds per side and the ratio resource/bare (goal <= 1.1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resources.hf import quiet_progress  # noqa: E402
from resources.trainer import LoRATrainer  # noqa: E402


def datasets_from_prompts(pairs: int):
    """Real prompts from the sentiment task; chosen/rejected answers of the two kinds the task separates."""
    from datasets import Dataset

    from dsc_assets.lib.tasks import load_task

    task = load_task("sentiment")
    prompts = [p.prompt for p in task.prompts[:pairs]]
    system = task.spec.system_prompt
    chosen = [f"I loved it. {p.split('.')[0]} turned out warm, funny and beautifully acted." for p in prompts]
    rejected = [f"I hated it. {p.split('.')[0]} was dull, slow and badly acted." for p in prompts]
    sft = Dataset.from_list(
        [
            {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": p},
                    {"role": "assistant", "content": c},
                ]
            }
            for p, c in zip(prompts, chosen)
        ]
    )
    dpo = Dataset.from_list(
        [
            {
                "prompt": [{"role": "system", "content": system}, {"role": "user", "content": p}],
                "chosen": [{"role": "assistant", "content": c}],
                "rejected": [{"role": "assistant", "content": r}],
                "score_chosen": 0.9,
                "score_rejected": -0.7,
            }
            for p, c, r in zip(prompts, chosen, rejected)
        ]
    )
    return sft, dpo


def bare(kind: str, dataset, trainer: LoRATrainer, out: Path) -> float:
    """The hand-written TRL script: load, LoRA, train, save adapter, merge, save."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    started = time.perf_counter()
    base = str(trainer.base_dir())
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lora = LoraConfig(
        r=trainer.lora_r,
        lora_alpha=trainer.lora_alpha,
        lora_dropout=trainer.lora_dropout,
        target_modules=list(trainer.target_modules),
        task_type="CAUSAL_LM",
    )
    common = dict(
        output_dir=str(out / "trainer"),
        learning_rate=trainer.learning_rate,
        max_steps=trainer.max_steps,
        per_device_train_batch_size=trainer.per_device_batch_size,
        gradient_accumulation_steps=trainer.grad_accum,
        max_length=trainer.max_length,
        seed=trainer.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_pin_memory=False,
        # TRL's configs turn bf16 mixed precision on by default; on a CPU without bf16 units that is ~10x
        # slower (measured: 112 s vs 10 s for 2 steps). Same precision as the resource (float32).
        bf16=False,
        fp16=False,
    )
    if kind == "sft":
        run = SFTTrainer(
            model=model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer, peft_config=lora
        )
    else:
        run = DPOTrainer(
            model=model,
            args=DPOConfig(**common, beta=trainer.dpo_beta),
            train_dataset=dataset.select_columns(["prompt", "chosen", "rejected"]),
            processing_class=tokenizer,
            peft_config=lora,
        )
    run.train()
    _save(run, tokenizer, out)
    return time.perf_counter() - started


def _save(run, tokenizer, out: Path) -> None:
    run.model.save_pretrained(str(out / "adapter"))
    merged = run.model.merge_and_unload()
    merged.save_pretrained(str(out / "merged"))
    tokenizer.save_pretrained(str(out / "merged"))


def length_reward(prompts, completions, **_):
    """A cheap stand-in reward for the RL timing (both sides get it): longer answers score higher."""
    return [len(str(c[-1]["content"] if isinstance(c, list) else c).split()) / 10 for c in completions]


def bare_reward_model(dataset, trainer: LoRATrainer, out: Path) -> float:
    """The hand-written TRL script for ALMoST's reward model: a scalar head, LoRA, RewardTrainer, save, merge."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    started = time.perf_counter()
    base = str(trainer.base_dir())
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    lora = LoraConfig(
        r=trainer.lora_r,
        lora_alpha=trainer.lora_alpha,
        lora_dropout=trainer.lora_dropout,
        target_modules=list(trainer.target_modules),
        task_type="SEQ_CLS",
        modules_to_save=["score"],
    )
    args = RewardConfig(
        output_dir=str(out / "trainer"),
        learning_rate=trainer.learning_rate,
        max_steps=trainer.max_steps,
        per_device_train_batch_size=trainer.per_device_batch_size,
        gradient_accumulation_steps=trainer.grad_accum,
        max_length=trainer.max_length,
        seed=trainer.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_pin_memory=False,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
    )
    run = RewardTrainer(
        model=model,
        args=args,
        train_dataset=dataset.select_columns(["prompt", "chosen", "rejected"]),
        processing_class=tokenizer,
        peft_config=lora,
    )
    run.train()
    _save(run, tokenizer, out)
    return time.perf_counter() - started


def bare_rl(prompts, trainer: LoRATrainer, out: Path) -> float:
    """The hand-written TRL script for ALMoST's RL step: RLOO with LoRA from the student, save, merge."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import RLOOConfig, RLOOTrainer

    started = time.perf_counter()
    base = str(trainer.base_dir())
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(
        r=trainer.lora_r,
        lora_alpha=trainer.lora_alpha,
        lora_dropout=trainer.lora_dropout,
        target_modules=list(trainer.target_modules),
        task_type="CAUSAL_LM",
    )
    args = RLOOConfig(
        output_dir=str(out / "trainer"),
        learning_rate=trainer.learning_rate,
        max_steps=trainer.max_steps,
        per_device_train_batch_size=trainer.rl_num_generations,
        gradient_accumulation_steps=1,
        num_generations=trainer.rl_num_generations,
        beta=trainer.rl_beta,
        max_completion_length=trainer.rl_max_completion_length,
        seed=trainer.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_pin_memory=False,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        temperature=0.7,
    )
    run = RLOOTrainer(
        model=model,
        reward_funcs=length_reward,
        args=args,
        train_dataset=prompts,
        processing_class=tokenizer,
        peft_config=lora,
    )
    run.train()
    _save(run, tokenizer, out)
    return time.perf_counter() - started


def resource(kind: str, dataset, trainer: LoRATrainer, out: Path, loss: str = "dpo") -> float:
    started = time.perf_counter()
    if kind == "sft":
        trainer.train_sft(dataset, str(out))
    elif kind == "reward_model":
        trainer.train_reward_model(dataset, str(out))
    elif kind == "rl":  # from the student itself; in the graph the policy is the ALMoST SFT checkpoint
        trainer.train_rl(dataset, str(trainer.base_dir()), length_reward, str(out))
    else:
        trainer.train_dpo(dataset, str(out), loss=loss)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side and kind, alternating")
    parser.add_argument(
        "--kinds", default="sft,dpo,rdpo,reward_model,rl", help="which trainings to time (comma-separated)"
    )
    parser.add_argument("--rl-steps", type=int, default=2, help="RLOO steps (each samples k answers per prompt)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    quiet_progress()

    trainer = LoRATrainer(
        model_cache_dir=".dsc/models",
        device="cpu",
        max_steps=args.steps,
        per_device_batch_size=2,
        grad_accum=2,
        max_length=256,
        rl_num_generations=2,
        rl_max_completion_length=32,
    )
    trainer.base_dir()  # dequantize once, outside the timings
    sft, dpo = datasets_from_prompts(args.pairs)
    prompts = dpo.select_columns(["prompt"])
    work = Path(tempfile.mkdtemp(prefix="dsc-bench-train-"))
    # one untimed warm-up per side: first-use costs (imports, kernels) belong to neither
    bare("sft", sft, trainer, work / "warm-bare")
    resource("sft", sft, trainer, work / "warm-resource")

    rl_trainer = trainer.model_copy(update={"max_steps": args.rl_steps})
    sides = {  # kind -> (bare side, resource side)
        "sft": (lambda out: bare("sft", sft, trainer, out), lambda out: resource("sft", sft, trainer, out)),
        "dpo": (lambda out: bare("dpo", dpo, trainer, out), lambda out: resource("dpo", dpo, trainer, out, "dpo")),
        "rdpo": (lambda out: bare("dpo", dpo, trainer, out), lambda out: resource("dpo", dpo, trainer, out, "rdpo")),
        "reward_model": (
            lambda out: bare_reward_model(dpo, trainer, out),
            lambda out: resource("reward_model", dpo, trainer, out),
        ),
        "rl": (lambda out: bare_rl(prompts, rl_trainer, out), lambda out: resource("rl", prompts, rl_trainer, out)),
    }
    labels = {
        "sft": "SFT (SFTTrainer)",
        "dpo": "DPO (dsc subclass vs stock DPOTrainer)",
        "rdpo": "rDPO (dsc subclass, soft labels) vs stock DPO",
        "reward_model": "ALMoST reward model (RewardTrainer, LoRA)",
        "rl": "ALMoST RL step (RLOOTrainer, LoRA)",
    }
    figures: dict[str, dict] = {}
    for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
        times = {"bare": [], "resource": []}
        for r in range(args.rounds):
            order = ("bare", "resource") if r % 2 == 0 else ("resource", "bare")
            for side in order:
                run_side = sides[kind][0 if side == "bare" else 1]
                times[side].append(run_side(work / f"{kind}-{side}-{r}"))
        b, p = statistics.median(times["bare"]), statistics.median(times["resource"])
        figures[kind] = {"bare_s": round(b, 2), "resource_s": round(p, 2), "ratio": round(p / b, 3)}
        print(f"{labels[kind]:<48} bare {b:7.2f} s   resource {p:7.2f} s   ratio {p / b:.3f}", flush=True)
    print(
        f"\n{args.steps} optimizer steps of batch {trainer.per_device_batch_size}x{trainer.grad_accum} on "
        f"{args.pairs} examples, median of {args.rounds} rounds per side; goal: ratio <= 1.1"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
