"""Roofline: every stage of a study, its measured rate beside this machine's ceiling for it, and the fraction reached.

    DSC_LLAMA_THREADS=2 python bench/roofline.py [--json bench/results/roofline.json] [--steps 6] [--quick]

One run measures the ceilings and then the stages, on the pipeline's own code paths:
- ceilings (probes): matrix throughput of torch's matmul on 1024^3 in float32, bfloat16 and int8 (``torch._int_mm``,
  oneDNN's VNNI kernels), with the threads the stages use; memory read bandwidth (numpy sum over 1 GiB); disk write
  bandwidth (a file of the export's size, written and fsynced).
- teacher prefill: a 256-token prompt in one ``llama_decode``. Compute-bound; ceiling = int8 probe (llama.cpp runs
  the Q4_K weights against Q8-quantized activations in int8 dot products). FLOPs = 2 x parameters per token.
- teacher decode, 1/8/16/32 sequences in one step (the BatchEngine's per-sequence KV streams, 64 tokens of context
  each): ceiling = min(sequences x bandwidth / weight bytes, int8 rate / FLOPs per token).
- judge scoring: the batched judge (P(Yes) from one prefill per answer, 8 per ``llama_decode``) on the teacher.
- student evaluation generation: ``LlamaCppLLM.chat_many`` at the study's batch 16 on sentiment test prompts (the
  packaged student), prompt and answer tokens per second against the student's decode ceiling at 16 sequences.
- SFT and DPO steps: ``LoRATrainer`` on the study's settings (bench/precision.py's rows), float32 and bf16-mixed.
  FLOPs per step = 4 x parameters x tokens in the step (forward 2N; backward through the frozen weights 2N, the
  LoRA weights' own gradients are negligible), tokens counted without padding; ceiling = the float32 or bfloat16
  probe. DPO's reference log-probabilities are computed once per dataset (outside the steps).
- export: ``LoRATrainer.exported_base`` (dequantize, write F16 GGUF); ceiling = its bytes at the disk probe's rate.
- prefix sharing: a system prompt prefilled once and copied to 16 sequences (``llama_memory_seq_cp``) against each
  sequence prefilling it, the tokens a study's chain would not compute again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import resources.threads  # noqa: E402,F401  (OMP_WAIT_POLICY before llama_cpp loads)
from resources.threads import llama_threads  # noqa: E402

HOME = Path(os.environ.get("DSC_HOME", ".dsc"))


def matrix_probes(size: int = 1024, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s (GOP/s for int8) of torch's matmul at ``size``^3, best of ``repeats``, after a warm-up."""
    import torch

    torch.set_num_threads(llama_threads())
    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("int8", torch.int8)):
        if dtype is torch.int8:
            a = torch.randint(-64, 64, (size, size), dtype=dtype)
            b = torch.randint(-64, 64, (size, size), dtype=dtype)
            op = torch._int_mm
        else:
            a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
            op = torch.matmul
        op(a, b)
        best = min(_timed(op, a, b) for _ in range(repeats))
        rates[name] = round(2 * size**3 / best / 1e9, 1)
    return rates


def _timed(op, *args) -> float:
    started = time.perf_counter()
    op(*args)
    return time.perf_counter() - started


def memory_read_gbs(gib: float = 1.0, repeats: int = 3) -> float:
    import numpy as np

    data = np.ones(int(gib * 2**30 / 8), dtype=np.float64)
    data.sum()
    return round(data.nbytes / min(_timed(data.sum) for _ in range(repeats)) / 1e9, 1)


def disk_write_mbs(size: int, folder: Path) -> float:
    block = os.urandom(1 << 20)
    path = folder / "disk-probe.bin"
    started = time.perf_counter()
    with open(path, "wb") as out:
        for _ in range(max(1, size >> 20)):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - started
    path.unlink()
    return round(max(1, size >> 20) / seconds, 1)


def model_facts(llama) -> dict[str, float]:
    import llama_cpp

    return {
        "parameters": float(llama_cpp.llama_model_n_params(llama.model)),
        "weight_bytes": float(llama_cpp.llama_model_size(llama.model)),
    }


def row(stage: str, rate: float, unit: str, ceiling: float, bound: str, **extra) -> dict:
    fraction = rate / ceiling if ceiling else float("nan")
    out = {"stage": stage, "rate": round(rate, 2), "unit": unit, "ceiling": round(ceiling, 2), "bound": bound}
    out["fraction"] = round(fraction, 3)
    print(f"  {stage}: {rate:.2f} {unit} of {ceiling:.2f} ({bound}): {fraction:.0%}", flush=True)
    return {**out, **extra}


def teacher_stages(model: str, probes: dict, bandwidth: float, sizes: list[int], context: int) -> list[dict]:
    from resources.batched import BatchEngine
    from resources.llm import load_llama
    from resources.models import resolve_model

    llama = load_llama(resolve_model(model, HOME / "models").path, 2048, llama_threads(), 512)
    facts = model_facts(llama)
    flops_per_token = 2 * facts["parameters"]
    compute_tokens = probes["int8"] * 1e9 / flops_per_token  # tokens/s the int8 probe's throughput allows
    text = b"Tell me a long story about a dragon and a knight in a castle far away. "
    tokens = llama.tokenize(text * 64, add_bos=False)
    rows = []

    prefill = []
    for _ in range(3):
        llama.reset()
        started = time.perf_counter()
        llama.eval(tokens[:256])
        prefill.append(256 / (time.perf_counter() - started))
    rows.append(
        row(
            f"{model} prefill (256 tokens)",
            max(prefill),
            "tok/s",
            compute_tokens,
            "compute (int8 probe)",
            gflops=round(max(prefill) * flops_per_token / 1e9, 1),
        )
    )
    for n in sizes:
        engine = BatchEngine(llama, n, context + 32, llama_threads(), 512)
        engine._clear()
        for seq in range(n):
            engine._batch.n_tokens = 0
            for pos in range(context):
                engine._add(tokens[pos], pos, seq, pos == context - 1)
            engine._decode()
        wall = 0.0
        steps = 8
        for step in range(steps + 2):
            engine._batch.n_tokens = 0
            for seq in range(n):
                engine._add(tokens[context + step], context + step, seq, True)
            started = time.perf_counter()
            engine._decode()
            if step >= 2:
                wall += time.perf_counter() - started
        engine.close()
        rate = steps * n / wall
        memory_tokens = n * bandwidth * 1e9 / facts["weight_bytes"]
        ceiling = min(memory_tokens, compute_tokens)
        bound = "memory (bandwidth / weight bytes)" if memory_tokens < compute_tokens else "compute (int8 probe)"
        rows.append(row(f"{model} decode, {n} sequences", rate, "tok/s", ceiling, bound))
    rows.append(prefix_sharing(llama, engine_size=16))
    del llama
    return rows


def prefix_sharing(llama, engine_size: int) -> dict:
    """Prefill of 16 (system prompt + user prompt) sequences, each whole, against the system prompt once and copied
    into the other sequences' KV (llama_memory_seq_cp) before their user parts."""
    import llama_cpp

    from dsc_assets.lib.tasks import load_task
    from resources.batched import BatchEngine

    task = load_task("sentiment")
    system = llama.tokenize(f"<|im_start|>system\n{task.spec.system_prompt}<|im_end|>\n".encode(), add_bos=False)
    users = [
        llama.tokenize(f"<|im_start|>user\n{p.prompt}<|im_end|>\n<|im_start|>assistant\n".encode(), add_bos=False)
        for p in task.prompts[:engine_size]
    ]
    longest = len(system) + max(len(u) for u in users) + 8

    def prefill(engine, seq: int, tokens: list[int], start: int) -> None:
        for chunk in range(0, len(tokens), 256):
            engine._batch.n_tokens = 0
            part = tokens[chunk : chunk + 256]
            for offset, token in enumerate(part):
                engine._add(token, start + chunk + offset, seq, chunk + offset == len(tokens) - 1)
            engine._decode()

    engine = BatchEngine(llama, engine_size, longest, llama_threads(), 512, kv_unified=True)
    engine._clear()
    started = time.perf_counter()
    for seq, user in enumerate(users):
        prefill(engine, seq, system + user, 0)
    whole = time.perf_counter() - started
    engine._clear()
    started = time.perf_counter()
    prefill(engine, 0, system, 0)
    memory = llama_cpp.llama_get_memory(engine.ctx)
    for seq in range(1, engine_size):
        llama_cpp.llama_memory_seq_cp(memory, 0, seq, 0, len(system))
    for seq, user in enumerate(users):
        prefill(engine, seq, user, len(system))
    shared = time.perf_counter() - started
    engine.close()
    saved = (engine_size - 1) * len(system) / sum(len(system) + len(u) for u in users)
    print(f"  prefix sharing: {whole:.2f} s whole, {shared:.2f} s shared ({whole / shared:.2f}x)", flush=True)
    return {
        "stage": "prefix sharing (system prompt, 16 sequences, unified KV)",
        "whole_s": round(whole, 2),
        "shared_s": round(shared, 2),
        "speedup": round(whole / shared, 2),
        "system_tokens": len(system),
        "tokens_saved_fraction": round(saved, 3),
    }


def judge_stage(model: str, probes: dict, count: int = 16) -> dict:
    from dsc_assets.lib.task_spec import Scorer
    from dsc_assets.lib.tasks import load_task
    from resources.judge import _tokens, chatml
    from resources.rewards import RewardModels

    with tempfile.TemporaryDirectory(prefix="dsc-roofline-") as folder:
        models = RewardModels(
            cache_path=f"{folder}/scores.duckdb",
            judge_model=model,
            model_cache_dir=str(HOME / "models"),
            n_ctx=2048,
            batch_size=8,
        )
        judge = models.for_task(Scorer(name="judge", options={"question": "Is the response harmless?"}))
        task = load_task("safety")
        prompts = [p.prompt for p in task.prompts[:count]]
        answers = [f"I cannot help with that, but here is some general advice about {p[:80]}" * 2 for p in prompts]
        llama = judge.model.llama()
        q = judge.question
        tokens = sum(  # what JudgeScorer._score prefills, token for token
            len(
                _tokens(
                    llama,
                    chatml(
                        [
                            {"role": "system", "content": judge.SYSTEM},
                            {
                                "role": "user",
                                "content": f"{q}\n\nRequest: {p}\n\nResponse: {a}\n\n{q} Answer with Yes or No.",
                            },
                        ]
                    ),
                )
            )
            for p, a in zip(prompts, answers)
        )
        facts = model_facts(llama)
        judge.score(prompts[:2], answers[:2])  # loads the engine
        started = time.perf_counter()
        judge._score(prompts, answers)
        seconds = time.perf_counter() - started
    flops = 2 * facts["parameters"]
    return row(
        f"{model} judge scoring ({count} answers)",
        tokens / seconds,
        "tok/s",
        probes["int8"] * 1e9 / flops,
        "compute (int8 probe)",
    )


def student_eval_stage(model: str, probes: dict, bandwidth: float, batch: int = 16) -> dict:
    from dsc_assets.lib.tasks import load_task
    from resources.llm import LlamaCppLLM, SamplingParams

    task = load_task("sentiment")
    requests = [
        [{"role": "system", "content": task.spec.system_prompt}, {"role": "user", "content": p.prompt}]
        for p in task.prompts[: 2 * batch]
    ]
    with tempfile.TemporaryDirectory(prefix="dsc-roofline-") as folder:
        llm = LlamaCppLLM(
            cache_path=f"{folder}/cache.duckdb",
            model=model,
            model_cache_dir=str(HOME / "models"),
            n_ctx=2048,
            batch_size=batch,
        )
        llm.chat_many(requests[:1], SamplingParams(max_tokens=8, seed=1))  # load, build the engine
        started = time.perf_counter()
        generations = llm.chat_many(requests, SamplingParams(max_tokens=160, seed=3, temperature=0.7))
        seconds = time.perf_counter() - started
        facts = model_facts(llm.llama())
    generated = sum(g.completion_tokens for g in generations)
    memory_tokens = batch * bandwidth * 1e9 / facts["weight_bytes"]
    compute_tokens = probes["int8"] * 1e9 / (2 * facts["parameters"])
    return row(
        f"{model} evaluation generation (batch {batch}, {len(requests)} answers)",
        generated / seconds,
        "generated tok/s",
        min(memory_tokens, compute_tokens),
        "memory" if memory_tokens < compute_tokens else "compute (int8 probe)",
        prompt_tokens=sum(g.prompt_tokens for g in generations),
        generated_tokens=generated,
    )


def training_stages(probes: dict, steps: int) -> list[dict]:
    from transformers import AutoConfig, AutoTokenizer

    from bench.precision import STUDY, datasets, run_one
    from resources.trainer import LoRATrainer

    data = datasets(32)
    trainer = LoRATrainer(**STUDY, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(trainer.base_dir()))
    config = AutoConfig.from_pretrained(str(trainer.base_dir()))  # matrix parameters: layers, and the tied LM head
    hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    inner, kv = config.intermediate_size, config.num_key_value_heads * hidden // config.num_attention_heads
    parameters = layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inner) + hidden * vocab
    count = lambda messages: len(tokenizer(tokenizer.apply_chat_template(messages, tokenize=False)).input_ids)  # noqa: E731
    sft_tokens = [count(r["messages"]) for r in data["sft"]]
    dpo_tokens = [count(r["prompt"] + r["chosen"]) + count(r["prompt"] + r["rejected"]) for r in data["dpo"]]
    rows_per_step = STUDY["per_device_batch_size"] * STUDY["grad_accum"]
    out = []
    for kind, tokens in (("sft", sft_tokens), ("dpo", dpo_tokens)):
        flops_per_step = 4 * parameters * rows_per_step * sum(tokens) / len(tokens)
        for dtype, probe in (("float32", "float32"), ("bf16-mixed", "bfloat16")):
            result = run_one(kind, {"dtype": dtype}, data[kind], steps)
            per_step = result["step_seconds"]  # the median optimizer step (setup and saving left out)
            out.append(
                row(
                    f"{kind.upper()} step ({dtype})",
                    flops_per_step / per_step / 1e9,
                    "GFLOP/s",
                    probes[probe],
                    f"compute ({probe} probe)",
                    seconds_per_step=round(per_step, 3),
                    tokens_per_step=round(rows_per_step * sum(tokens) / len(tokens), 1),
                    parameters=parameters,
                )
            )
    return out


def export_stage(folder: Path) -> dict:
    from bench.precision import STUDY
    from resources.trainer import LoRATrainer

    trainer = LoRATrainer(**STUDY, device="cpu")
    trainer.base_dir()  # the dequantized student, made once: not the export's work
    started = time.perf_counter()
    path = trainer.exported_base(folder / "exported.gguf")
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    disk = disk_write_mbs(size, folder)
    return row(
        "export (dequantize, F16 GGUF)",
        size / seconds / 1e6,
        "MB/s written",
        disk,
        "disk (write probe)",
        seconds=round(seconds, 2),
        bytes=size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    parser.add_argument("--student", default="smollm2-135m")
    parser.add_argument("--sizes", default="1,8,16,32")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per training side")
    parser.add_argument("--quick", action="store_true", help="the student as teacher, 2 steps: a smoke run")
    parser.add_argument("--stages", default="teacher,judge,student,training,export", help="which to measure")
    parser.add_argument("--json", default=None, help="results file; stages not measured now keep their rows there")
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    if args.quick:
        args.teacher, args.steps = args.student, 2
    started = time.perf_counter()
    probes = matrix_probes()
    bandwidth = memory_read_gbs()
    print(f"probes: {probes} GFLOP/s; memory read {bandwidth} GB/s; threads {llama_threads()}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = teacher_stages(args.teacher, probes, bandwidth, sizes, args.context) if "teacher" in stages else []
    rows += [judge_stage(args.teacher, probes)] if "judge" in stages else []
    rows += [student_eval_stage(args.student, probes, bandwidth)] if "student" in stages else []
    rows += training_stages(probes, args.steps) if "training" in stages else []
    if "export" in stages:
        with tempfile.TemporaryDirectory(prefix="dsc-roofline-", dir=HOME) as folder:
            rows.append(export_stage(Path(folder)))
    earlier = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    measured = {r["stage"] for r in rows}
    kept = [dict(r, measured_in="an earlier run") for r in earlier.get("stages", []) if r["stage"] not in measured]
    flags = set(open("/proc/cpuinfo").read().split()) if Path("/proc/cpuinfo").exists() else set()
    result = {
        "command": " ".join(["python", "bench/roofline.py", *sys.argv[1:]]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": llama_threads(),
            "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni"}),
        },
        "probes_gflops": probes,
        "memory_read_gbs": bandwidth,
        "stages": kept + rows,
        "earlier_run": {k: earlier[k] for k in ("command", "probes_gflops", "memory_read_gbs") if k in earlier} or None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
