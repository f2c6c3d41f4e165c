"""Training precision and the DPO reference: today's float32 trainer against bf16 autocast and precomputed reference
log-probabilities, side by side in one run, on the study's trainer settings.

    python bench/precision.py [--pairs 32] [--steps 8] [--rounds 2] [--json bench/results/precision.json]
    python bench/precision.py --profile sft:bf16-mixed   # where a step's time goes (torch profiler, steps 3-4)

Every variant trains the same student (SmolLM2-135M) through the project's own ``LoRATrainer`` with the study
profile's settings (LoRA r 8, batch 2 x 2, max_length 512, learning rate 2e-4, DPO with the chosen answer's NLL at
weight 1), the same seed and rows (sentiment's prompts, answers of study length: ~110 tokens) and the same number of
steps. Rounds alternate the order (ABBA) so drift in machine speed hits every variant alike. Per variant: the median
seconds per optimizer step (setup and saving left out), the whole call's seconds, the loss curve, and the ratio to
float32. The matrix-product probe (resources/precision.py) is printed first, with the CPU's bf16 flags.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resources.hf import quiet_progress  # noqa: E402
from resources.precision import BF16_FLAGS, PROBE_SHAPE, cpu_flags, matmul_rates  # noqa: E402
from resources.trainer import LoRATrainer  # noqa: E402

STUDY = dict(
    lora_r=8,
    lora_alpha=16,
    per_device_batch_size=2,
    grad_accum=2,
    max_length=512,
    dpo_sft_weight=1.0,
    logging_steps=1,
)
VARIANTS = {
    "sft": {
        "float32": {"dtype": "float32"},
        "bf16-mixed": {"dtype": "bf16-mixed"},
    },
    "dpo": {
        "float32": {"dtype": "float32", "dpo_precompute_ref": False, "dpo_fused_head": False},  # the trainer before
        "float32 + ref once": {"dtype": "float32", "dpo_precompute_ref": True, "dpo_fused_head": False},
        "float32 + ref once + fused head": {"dtype": "float32", "dpo_precompute_ref": True, "dpo_fused_head": True},
        "bf16-mixed + ref once + fused head": {
            "dtype": "bf16-mixed",
            "dpo_precompute_ref": True,
            "dpo_fused_head": True,
        },
    },
}
GOOD = (
    "{title} was a delight from the first scene to the last. The cast is warm and quick, the jokes land, and the "
    "story keeps its heart without turning sweet. The photography is lovely, the music lifts every turn, and the "
    "ending earns its tears. I left smiling and I would gladly watch it again with friends this weekend."
)
BAD = (
    "{title} was a chore from the first scene to the last. The cast looks bored, the jokes fall flat, and the story "
    "loses its way long before the end. The photography is muddy, the music drones over every turn, and the ending "
    "just stops. I left tired and I would not watch it again, not even for free on a rainy weekend."
)


def datasets(pairs: int):
    from datasets import Dataset

    from dsc_assets.lib.tasks import load_task

    task = load_task("sentiment")
    system = task.spec.system_prompt
    rows = []
    for record in task.prompts[:pairs]:
        title = record.prompt.split(".")[0][:60]
        rows.append((record.prompt, GOOD.format(title=title), BAD.format(title=title)))
    sft = Dataset.from_list(
        [
            {
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": p}]
                + [{"role": "assistant", "content": good}]
            }
            for p, good, _ in rows
        ]
    )
    dpo = Dataset.from_list(
        [
            {
                "prompt": [{"role": "system", "content": system}, {"role": "user", "content": p}],
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
            }
            for p, good, bad in rows
        ]
    )
    return {"sft": sft, "dpo": dpo}


def run_one(kind: str, settings: dict, dataset, steps: int) -> dict:
    trainer = LoRATrainer(**STUDY, **settings, max_steps=steps, device="cpu")
    with tempfile.TemporaryDirectory(prefix="dsc-bench-precision-") as out:
        result = trainer.train_sft(dataset, out) if kind == "sft" else trainer.train_dpo(dataset, out)
    return {
        "step_seconds": result.step_seconds,
        "seconds": result.seconds,
        "losses": result.losses,
        "precision": result.precision,
    }


def profile(kind: str, dtype: str, dataset) -> None:
    """Print the torch profiler's top ops (self CPU time) over optimizer steps 3 and 4 of one training."""
    import torch
    from transformers import TrainerCallback

    import resources.trainer

    class Profiler(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.profiler.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                self.profiler.__exit__(None, None, None)
                print(self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))

    prepare = resources.trainer.LoRATrainer._prepare
    resources.trainer.LoRATrainer._prepare = lambda self, trainer: (
        prepare(self, trainer),
        trainer.add_callback(Profiler()),
    )
    trainer = LoRATrainer(**STUDY, dtype=dtype, max_steps=4, device="cpu")
    with tempfile.TemporaryDirectory(prefix="dsc-bench-precision-") as out:
        (trainer.train_sft if kind == "sft" else trainer.train_dpo)(dataset, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kinds", default="sft,dpo")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--profile", metavar="KIND:DTYPE", help="instead: profile steps 3-4 (e.g. sft:bf16-mixed)")
    options = parser.parse_args()
    quiet_progress()
    if options.profile:
        kind, dtype = options.profile.split(":")
        return profile(kind, dtype, datasets(16)[kind])
    import torch

    flags = sorted(cpu_flags() & {*BF16_FLAGS, "amx_tile", "avx512f"})
    probe = matmul_rates()
    print(
        f"CPU: {platform.processor() or platform.machine()}, flags {flags}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"matmul {PROBE_SHAPE}: float32 {probe['float32']} GFLOP/s, bfloat16 {probe['bfloat16']} GFLOP/s "
        f"({probe['bfloat16'] / probe['float32']:.2f}x)"
    )
    data = datasets(options.pairs)
    LoRATrainer(device="cpu").base_dir()  # the HF copy, made once before any timing
    results: dict = {"probe": probe, "flags": flags, "steps": options.steps, "runs": {}}
    for kind in options.kinds.split(","):
        names = list(VARIANTS[kind])
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for round_ in range(options.rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                runs[name].append(run_one(kind, VARIANTS[kind][name], data[kind], options.steps))
                print(
                    f"{kind} {name} round {round_ + 1}: {runs[name][-1]['step_seconds']} s/step, "
                    f"losses {[round(x, 3) for x in runs[name][-1]['losses']]}",
                    flush=True,
                )
        base = statistics.median(r["step_seconds"] for r in runs[names[0]])
        print(f"\n| {kind} | s per step | vs {names[0]} | whole call s | loss after {options.steps} steps |")
        print("|---|---|---|---|---|")
        for name in names:
            step = statistics.median(r["step_seconds"] for r in runs[name])
            last = statistics.median(r["losses"][-1] for r in runs[name])
            whole = statistics.median(r["seconds"] for r in runs[name])
            print(f"| {name} | {step:.3f} | {base / step:.2f}x | {whole:.1f} | {last:.4f} |")
        results["runs"][kind] = runs
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
