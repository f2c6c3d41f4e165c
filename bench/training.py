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

from resources.trainer import LoRATrainer, _quiet_progress  # noqa: E402


def datasets_from_prompts(pairs: int):
    """Real prompts from the sentiment task; chosen/rejected answers of the two kinds the task separates."""
    from datasets import Dataset

    from dsc_assets.tasks import load_task

    task = load_task("sentiment")
    prompts = [p.prompt for p in task.prompts[:pairs]]
    system = task.spec.system_prompt
    chosen = [f"I loved it. {p.split('.')[0]} turned out warm, funny and beautifully acted." for p in prompts]
    rejected = [f"I hated it. {p.split('.')[0]} was dull, slow and badly acted." for p in prompts]
    sft = Dataset.from_list([{"messages": [{"role": "system", "content": system}, {"role": "user", "content": p},
                                          {"role": "assistant", "content": c}]} for p, c in zip(prompts, chosen)])
    dpo = Dataset.from_list([{"prompt": [{"role": "system", "content": system}, {"role": "user", "content": p}],
                              "chosen": [{"role": "assistant", "content": c}],
                              "rejected": [{"role": "assistant", "content": r}],
                              "score_chosen": 0.9, "score_rejected": -0.7}
                             for p, c, r in zip(prompts, chosen, rejected)])
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
    lora = LoraConfig(r=trainer.lora_r, lora_alpha=trainer.lora_alpha, lora_dropout=trainer.lora_dropout,
                      target_modules=list(trainer.target_modules), task_type="CAUSAL_LM")
    common = dict(output_dir=str(out / "trainer"), learning_rate=trainer.learning_rate, max_steps=trainer.max_steps,
                  per_device_train_batch_size=trainer.per_device_batch_size,
                  gradient_accumulation_steps=trainer.grad_accum, max_length=trainer.max_length, seed=trainer.seed,
                  logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
                  dataloader_pin_memory=False,
                  # TRL's configs turn bf16 mixed precision on by default; on a CPU without bf16 units that is ~10x
                  # slower (measured: 112 s vs 10 s for 2 steps). Same precision as the resource (float32).
                  bf16=False, fp16=False)
    if kind == "sft":
        run = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora)
    else:
        run = DPOTrainer(model=model, args=DPOConfig(**common, beta=trainer.dpo_beta),
                         train_dataset=dataset.select_columns(["prompt", "chosen", "rejected"]),
                         processing_class=tokenizer, peft_config=lora)
    run.train()
    run.model.save_pretrained(str(out / "adapter"))
    merged = run.model.merge_and_unload()
    merged.save_pretrained(str(out / "merged"))
    tokenizer.save_pretrained(str(out / "merged"))
    return time.perf_counter() - started


def resource(kind: str, dataset, trainer: LoRATrainer, out: Path, loss: str = "dpo") -> float:
    started = time.perf_counter()
    if kind == "sft":
        trainer.train_sft(dataset, str(out))
    else:
        trainer.train_dpo(dataset, str(out), loss=loss)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side and kind, alternating")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    _quiet_progress()

    trainer = LoRATrainer(model_cache_dir=".dsc/models", device="cpu", max_steps=args.steps,
                          per_device_batch_size=2, grad_accum=2, max_length=256)
    trainer.base_dir()  # dequantize once, outside the timings
    sft, dpo = datasets_from_prompts(args.pairs)
    work = Path(tempfile.mkdtemp(prefix="dsc-bench-train-"))
    # one untimed warm-up per side: first-use costs (imports, kernels) belong to neither
    bare("sft", sft, trainer, work / "warm-bare")
    resource("sft", sft, trainer, work / "warm-resource")

    figures: dict[str, dict] = {}
    for kind, dataset, loss in (("sft", sft, None), ("dpo", dpo, "dpo"), ("rdpo", dpo, "rdpo")):
        times = {"bare": [], "resource": []}
        for r in range(args.rounds):
            order = ("bare", "resource") if r % 2 == 0 else ("resource", "bare")
            for side in order:
                out = work / f"{kind}-{side}-{r}"
                if side == "bare":
                    times[side].append(bare("sft" if kind == "sft" else "dpo", dataset, trainer, out))
                else:
                    times[side].append(resource("sft" if kind == "sft" else "dpo", dataset, trainer, out, loss or "dpo"))
        b, p = statistics.median(times["bare"]), statistics.median(times["resource"])
        figures[kind] = {"bare_s": round(b, 2), "resource_s": round(p, 2), "ratio": round(p / b, 3)}
        label = {"sft": "SFT (SFTTrainer)", "dpo": "DPO (dsc subclass vs stock DPOTrainer)",
                 "rdpo": "rDPO (dsc subclass, soft labels) vs stock DPO"}[kind]
        print(f"{label:<48} bare {b:7.2f} s   resource {p:7.2f} s   ratio {p / b:.3f}", flush=True)
    print(f"\n{args.steps} optimizer steps of batch {trainer.per_device_batch_size}x{trainer.grad_accum} on "
          f"{args.pairs} examples, median of {args.rounds} rounds per side; goal: ratio <= 1.1")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
