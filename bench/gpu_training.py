"""GPU check of the trainer resource: LoRATrainer on cuda/bfloat16 next to cpu/float32, in one run.

    python bench/gpu_training.py [--devices cuda,cpu] [--methods sft,dpo,rdpo,dlma,reward_model,rl] [--json PATH]

LoRATrainer's docstring says ``device: cuda`` and ``dtype: bfloat16`` run the same code on a GPU. This runs each of
its trainings (train_sft, train_dpo with dpo/rdpo/dlma, train_reward_model, train_rl) through the resource itself on
every device asked for, on small fixed synthetic datasets, and reports per run: optimizer steps, wall seconds (load,
training, adapter + merged save), steady-state seconds per step (the median step after the first, timed by a
callback that synchronizes the GPU), first/last training loss, whether every logged loss is finite, whether the LoRA
adapter moved (PEFT starts every lora_B at zero; the saved adapter must have a non-zero, finite B), where the base
weights sat and in which dtype while training, and the GPU's peak memory. Then per method the speed ratio
cpu s/step over cuda s/step, measured side by side in this one run, and how close the first logged loss is on the two
sides (SFT/DPO/rDPO/DLMA/reward model start from the same weights and data order, and LoRA's B = 0 makes the first
step dropout-free, so only precision separates them; RL samples, so its first loss is not compared).

The student's GGUF (98 MB) does not travel to a GPU machine, so the base model is the student's exact architecture
(bench/student_arch: config.json and tokenizer, taken from the GGUF) with weights drawn at random under a fixed
seed, saved once into the work folder and handed to the resource through its private ``_base``. Timings and
numerics of the code path are those of the real student; the losses are those of an untrained network.

export_gguf needs the student's GGUF too; the export itself (export_merged_gguf) is checked on each SFT result
against a small synthetic base GGUF (a few of the student's tensors, written with the gguf package), when the gguf
package imports; else it is skipped and said so.

Exit status: 0 all runs passed; 1 a cuda run failed (every method is still run and reported); 2 setup failed (imports,
base model, or cuda asked for but absent); 3 only cpu runs failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ALL_METHODS = ("sft", "dpo", "rdpo", "dlma", "reward_model", "rl")
SYSTEM = {"role": "system", "content": "You write short, specific film reviews."}
ADJECTIVES = ("Silent", "Red", "Last", "Golden", "Broken", "Hidden", "Distant", "Electric")
NOUNS = ("Harbor", "Summer", "Train", "Garden")
GOOD = (
    "warm, funny and beautifully acted",
    "tense, clever and gorgeously shot",
    "moving, with a score that lingers",
    "sharp, generous and full of life",
)
BAD = ("dull, slow and badly acted", "a mess of clichés", "loud and empty", "tedious from start to finish")


# ---------------------------------------------------------------------------------------------------- data
def films(n: int) -> list[str]:
    names = [f"The {a} {b}" for a in ADJECTIVES for b in NOUNS]
    return [names[i % len(names)] + ("" if i < len(names) else f" {i // len(names) + 1}") for i in range(n)]


def make_datasets(rows: int) -> dict:
    """Fixed synthetic rows in the formats the resource takes (as its tests and bench/training.py build them)."""
    from datasets import Dataset

    titles = films(rows)
    user = [{"role": "user", "content": f"Review {t}."} for t in titles]
    chosen = [f"{t} is {GOOD[i % len(GOOD)]}." for i, t in enumerate(titles)]
    rejected = [f"{t} is {BAD[i % len(BAD)]}." for i, t in enumerate(titles)]
    sft = Dataset.from_list(
        [{"messages": [SYSTEM, u, {"role": "assistant", "content": c}]} for u, c in zip(user, chosen)]
    )
    pairs = Dataset.from_list(
        [
            {
                "prompt": [SYSTEM, u],
                "chosen": [{"role": "assistant", "content": c}],
                "rejected": [{"role": "assistant", "content": r}],
                "score_chosen": 0.9 - 0.05 * (i % 5),
                "score_rejected": -0.7 + 0.1 * (i % 4),  # rDPO's soft labels
                "self_reward": float((i % 7) - 3),
            }  # DLMA's self-reward margin
            for i, (u, c, r) in enumerate(zip(user, chosen, rejected))
        ]
    )
    prompts = Dataset.from_list([{"prompt": [SYSTEM, u]} for u in user])
    return {"sft": sft, "pairs": pairs, "prompts": prompts}


def char_reward(prompts, completions, **_):
    """RL's stand-in reward: the answer's length in characters / 50. It differs between the k samples of a prompt
    even for an untrained network (a reward constant within a group gives RLOO zero advantage and no gradient)."""
    texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
    return [len(t) / 50 for t in texts]


# ---------------------------------------------------------------------------------------------------- timing hook
CAPTURED: list = []  # (trainer, StepTimer) of every transformers.Trainer built since the last clear


def install_step_timer() -> None:
    """Every transformers.Trainer (TRL's trainers included) gets a StepTimer callback, without touching the resource."""
    import torch
    import transformers
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin, self.step_ends, self.device, self.base_dtype = None, [], None, None

        def _sync(self):
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._sync()
            self.begin = time.perf_counter()
            if model is not None:
                for name, param in model.named_parameters():
                    if "lora_" not in name and "modules_to_save" not in name and "score" not in name:
                        self.device, self.base_dtype = str(param.device), str(param.dtype).replace("torch.", "")
                        break

        def on_step_end(self, args, state, control, **kwargs):
            self._sync()
            self.step_ends.append(time.perf_counter())

    original = transformers.Trainer.__init__
    if getattr(original, "_dsc_timed", False):
        return

    def timed_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        timer = StepTimer()
        self.add_callback(timer)
        CAPTURED.append((self, timer))

    timed_init._dsc_timed = True
    transformers.Trainer.__init__ = timed_init


# ---------------------------------------------------------------------------------------------------- base model
def write_arch(arch: Path, model: str = "smollm2-135m") -> Path:
    """The student's config.json and tokenizer (a few MB, no weights), read from its installed GGUF: run here, before a
    device run that carries the folder (the GGUF itself, 98 MB, is over what travels)."""
    from transformers import AutoConfig, AutoTokenizer

    from resources.models import resolve_model

    gguf_path = resolve_model(model, REPO / ".dsc" / "models").path
    arch.mkdir(parents=True, exist_ok=True)
    AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).save_pretrained(str(arch))
    AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name).save_pretrained(str(arch))
    return arch


def build_base(arch: Path, target: Path, seed: int) -> Path:
    """The student's architecture with random weights (fixed seed), saved with its tokenizer as an HF folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (target / "config.json").exists():
        return target
    config = AutoConfig.from_pretrained(str(arch))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(arch))
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    os.replace(partial, target)
    return target


# ---------------------------------------------------------------------------------------------------- one run
def adapter_state(adapter_dir: str) -> dict:
    import torch

    from resources.export import load_safetensors

    state = load_safetensors(Path(adapter_dir))
    if not state:
        return {"adapter_changed": False, "adapter_finite": False, "adapter_note": "no adapter safetensors saved"}
    lora_b = [v.float() for k, v in state.items() if "lora_B" in k]
    finite = all(bool(torch.isfinite(v.float()).all()) for v in state.values())
    max_b = max((float(v.abs().max()) for v in lora_b), default=0.0)
    return {
        "adapter_changed": bool(lora_b) and max_b > 0,
        "adapter_finite": finite,
        "lora_B_tensors": len(lora_b),
        "lora_B_max_abs": max_b,
        "adapter_dtypes": sorted({str(v.dtype).replace("torch.", "") for v in state.values()}),
    }


def run_one(method: str, device: str, dtype: str, steps: int, base: Path, data: dict, opts, work: Path) -> dict:
    import torch

    from resources.trainer import LoRATrainer

    row = {"method": method, "device": device, "dtype": dtype, "steps_asked": steps, "ok": False}
    out = work / f"{method}-{device}-{dtype}"
    shutil.rmtree(out, ignore_errors=True)
    settings = dict(
        base_model="smollm2-135m",
        model_cache_dir=str(work / "models"),
        device=device,
        dtype=dtype,
        max_steps=steps,
        per_device_batch_size=opts.batch,
        grad_accum=opts.grad_accum,
        max_length=opts.max_length,
        learning_rate=opts.lr,
        seed=opts.seed,
        logging_steps=1,
        rl_num_generations=opts.rl_generations,
        rl_max_completion_length=opts.rl_completion,
    )
    trainer = LoRATrainer(**settings)
    trainer._base = base  # the random-init student; nothing reads the GGUF
    CAPTURED.clear()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        if method == "sft":
            result = trainer.train_sft(data["sft"], str(out))
        elif method in ("dpo", "rdpo", "dlma"):
            result = trainer.train_dpo(data["pairs"], str(out), loss=method)
        elif method == "reward_model":
            result = trainer.train_reward_model(data["pairs"], str(out))
        elif method == "rl":
            result = trainer.train_rl(data["prompts"], str(base), char_reward, str(out))
        else:
            raise ValueError(f"unknown method {method}")
    except Exception as exc:  # noqa: BLE001 - report every method, keep going
        row.update(
            seconds=round(time.perf_counter() - started, 2),
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=-15),
        )
        return row
    finally:
        if device == "cuda":
            row["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    row["seconds"] = round(time.perf_counter() - started, 2)
    row["steps"] = result.steps
    losses = [float(x) for x in result.losses]
    row["losses"] = [round(x, 5) for x in losses]
    row["first_loss"] = losses[0] if losses else None
    row["last_loss"] = losses[-1] if losses else None
    row["loss_finite"] = bool(losses) and all(math.isfinite(x) for x in losses)
    timer = CAPTURED[-1][1] if CAPTURED else None
    if timer is not None and timer.step_ends:
        ends = timer.step_ends
        row["train_s"] = round(ends[-1] - timer.begin, 3)
        row["first_step_s"] = round(ends[0] - timer.begin, 3)
        gaps = [b - a for a, b in zip(ends, ends[1:])]
        row["s_per_step"] = round(statistics.median(gaps) if gaps else ends[0] - timer.begin, 4)
        row["s_per_step_basis"] = f"median of {len(gaps)} steps after the first" if gaps else "first step only"
        row["ran_on"], row["base_dtype"] = timer.device, timer.base_dtype
    row.update(adapter_state(result.adapter_dir))
    problems = []
    if result.steps != steps:
        problems.append(f"{result.steps} steps, asked {steps}")
    if not row["loss_finite"]:
        problems.append("a logged loss is missing or not finite")
    if not row.get("adapter_changed"):
        problems.append("LoRA B is still zero: the adapter did not move")
    if not row.get("adapter_finite"):
        problems.append("adapter weights not finite")
    if row.get("ran_on") and not row["ran_on"].startswith(device):
        problems.append(f"base weights were on {row['ran_on']}, asked {device}")
    if row.get("base_dtype") and row["base_dtype"] != dtype:
        problems.append(f"base weights were {row['base_dtype']}, asked {dtype}")
    if problems:
        row["error"] = "; ".join(problems)
    else:
        row["ok"] = True
    row["_merged_dir"] = result.merged_dir
    return row


# ---------------------------------------------------------------------------------------------------- export
def export_check(merged_dir: str, work: Path, target_modules: list[str], tag: str) -> dict:
    """export_merged_gguf on a trained merged folder, against a synthetic base GGUF holding the first and last
    layer's targeted tensors (F16 zeros) and one untouched tensor: replaced tensors must come back as the merged
    weights (q/k in llama.cpp's row order), the untouched one as it was."""
    row = {"method": "export_merged_gguf", "device": tag.split("/")[0], "dtype": tag.split("/")[1], "ok": False}
    started = time.perf_counter()
    try:
        import gguf
        import numpy as np
    except ImportError as exc:
        row.update(
            skipped=True,
            ok=True,
            note=f"skipped: gguf package not importable ({exc}); export_gguf itself "
            "needs the student's GGUF, which does not travel",
        )
        return row
    try:
        from resources.export import export_merged_gguf, gguf_replacements, load_safetensors

        merged = Path(merged_dir)
        config = json.loads((merged / "config.json").read_text())
        state = load_safetensors(merged)
        row["merged_dtype"] = sorted({str(v.dtype).replace("torch.", "") for v in state.values()})
        base = work / f"synthetic-base-{tag.replace('/', '-')}.gguf"
        writer = gguf.GGUFWriter(str(base), "llama")
        writer.add_name("dsc synthetic base")
        writer.add_block_count(config["num_hidden_layers"])
        expected = gguf_replacements(state, config, target_modules, layers=(0, config["num_hidden_layers"] - 1))
        for name, weight in expected.items():
            writer.add_tensor(name, np.zeros(weight.shape, np.float16))
        untouched = np.arange(config["hidden_size"], dtype=np.float32)
        writer.add_tensor("output_norm.weight", untouched)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        out = work / f"exported-{tag.replace('/', '-')}.gguf"
        export_merged_gguf(base, merged, out, list(target_modules))
        reader = gguf.GGUFReader(str(out))
        tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
        wrong = [
            name
            for name, want in expected.items()
            if name not in tensors or not np.array_equal(tensors[name].reshape(want.shape), want)
        ]
        if "output_norm.weight" not in tensors or not np.array_equal(
            tensors["output_norm.weight"].reshape(-1), untouched
        ):
            wrong.append("output_norm.weight (untouched)")
        row.update(checked_tensors=len(expected) + 1, seconds=round(time.perf_counter() - started, 2))
        if wrong:
            row["error"] = f"{len(wrong)} tensors differ: {wrong[:4]}"
        else:
            row["ok"] = True
    except Exception as exc:  # noqa: BLE001
        row.update(
            seconds=round(time.perf_counter() - started, 2),
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=-10),
        )
    return row


# ---------------------------------------------------------------------------------------------------- report
def fmt(value, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'method':<18} {'device':<6} {'dtype':<9} {'steps':>5} {'wall s':>7} {'train s':>8} {'s/step':>8} "
        f"{'first loss':>10} {'last loss':>10} {'finite':>6} {'adapter':>7} {'peak GiB':>8}  status"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        status = (
            "skipped: " + r.get("note", "")
            if r.get("skipped")
            else ("ok" if r["ok"] else "FAIL: " + r.get("error", "?"))
        )
        print(
            f"{r['method']:<18} {r['device']:<6} {r['dtype']:<9} {fmt(r.get('steps')):>5} {fmt(r.get('seconds'), '.1f'):>7} "
            f"{fmt(r.get('train_s'), '.2f'):>8} {fmt(r.get('s_per_step'), '.3f'):>8} "
            f"{fmt(r.get('first_loss'), '.4f'):>10} {fmt(r.get('last_loss'), '.4f'):>10} "
            f"{fmt(r.get('loss_finite')):>6} {fmt(r.get('adapter_changed')):>7} {fmt(r.get('cuda_peak_gib'), '.2f'):>8}  "
            f"{status[:160]}"
        )


def comparisons(rows: list[dict], devices: list[str]) -> dict:
    if not {"cuda", "cpu"} <= set(devices):
        return {}
    out = {}
    for method in ALL_METHODS:
        by = {r["device"]: r for r in rows if r["method"] == method and r.get("ok") and not r.get("skipped")}
        if "cuda" not in by or "cpu" not in by:
            continue
        gpu, cpu = by["cuda"], by["cpu"]
        entry = {"cpu_s_per_step": cpu.get("s_per_step"), "cuda_s_per_step": gpu.get("s_per_step")}
        if gpu.get("s_per_step") and cpu.get("s_per_step"):
            entry["cpu_over_cuda"] = round(cpu["s_per_step"] / gpu["s_per_step"], 2)
        if method != "rl" and gpu.get("first_loss") is not None and cpu.get("first_loss") is not None:
            entry["first_loss_cuda"], entry["first_loss_cpu"] = gpu["first_loss"], cpu["first_loss"]
            entry["first_loss_rel_diff"] = round(
                abs(gpu["first_loss"] - cpu["first_loss"]) / max(abs(cpu["first_loss"]), 1e-9), 4
            )
        out[method] = entry
    return out


def environment() -> dict:
    import importlib.metadata as md

    import torch

    env = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    for name in (
        "torch",
        "transformers",
        "trl",
        "peft",
        "accelerate",
        "datasets",
        "dagster",
        "pydantic",
        "numpy",
        "pyarrow",
        "tokenizers",
        "safetensors",
        "huggingface_hub",
        "gguf",
    ):
        try:
            env[name] = md.version(name)
        except md.PackageNotFoundError:
            env[name] = None
    return env


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str))


# ---------------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="cuda,cpu", help="comma-separated, run in this order per method")
    parser.add_argument("--methods", default=",".join(ALL_METHODS))
    parser.add_argument("--rows", type=int, default=32, help="rows in each synthetic dataset")
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps on cuda")
    parser.add_argument("--cpu-steps", type=int, default=4, help="optimizer steps on cpu")
    parser.add_argument("--rl-steps", type=int, default=3, help="RLOO steps on cuda")
    parser.add_argument("--cpu-rl-steps", type=int, default=2, help="RLOO steps on cpu")
    parser.add_argument("--cuda-dtype", default="bfloat16")
    parser.add_argument("--cpu-dtype", default="float32")
    parser.add_argument("--batch", type=int, default=2, help="per-device batch size")
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rl-generations", type=int, default=4, help="RLOO samples per prompt (k)")
    parser.add_argument("--rl-completion", type=int, default=32, help="RLOO tokens per sampled answer")
    parser.add_argument("--cpu-threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--deadline-s", type=float, default=0, help="start no new run after this many seconds (0: none)"
    )
    parser.add_argument("--no-export", action="store_true", help="skip the export_merged_gguf check")
    parser.add_argument("--arch", default=str(REPO / "bench" / "student_arch"), help="config.json + tokenizer folder")
    parser.add_argument(
        "--write-arch",
        action="store_true",
        help="write --arch from the installed student's GGUF and exit (run it here, then carry the folder)",
    )
    parser.add_argument("--work", help="work folder (default: a new temporary one, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", help="write the results to this file (rewritten after every run)")
    opts = parser.parse_args()
    if opts.write_arch:
        print(f"wrote {write_arch(Path(opts.arch))}")
        return 0
    t0 = time.perf_counter()
    devices = [d.strip() for d in opts.devices.split(",") if d.strip()]
    methods = [m.strip() for m in opts.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS] + [d for d in devices if d not in ("cuda", "cpu")]
    payload: dict = {"config": vars(opts), "results": [], "comparisons": {}, "failures": []}
    if unknown:
        print(f"SETUP FAILED: unknown method/device {unknown}", flush=True)
        return 2
    try:
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ.setdefault(var, "1")
        import torch

        if opts.cpu_threads:
            torch.set_num_threads(opts.cpu_threads)
        from resources.hf import quiet_progress
        from resources.trainer import LoRATrainer

        quiet_progress()
        from trl import DPOConfig, RewardConfig, RewardTrainer, RLOOConfig, RLOOTrainer, SFTConfig, SFTTrainer  # noqa: F401 - warm imports

        install_step_timer()
        payload["env"] = environment()
        print(json.dumps(payload["env"]), flush=True)
        if "cuda" in devices and not torch.cuda.is_available():
            print(
                "SETUP FAILED: --devices names cuda but torch.cuda.is_available() is False "
                "(use --devices cpu on a machine without a GPU)",
                flush=True,
            )
            write_json(opts.json, payload)
            return 2
        work = Path(opts.work) if opts.work else Path(tempfile.mkdtemp(prefix="dsc-gpu-train-"))
        work.mkdir(parents=True, exist_ok=True)
        base = build_base(Path(opts.arch), work / "student-random", opts.seed)
        data = make_datasets(opts.rows)
        target_modules = list(LoRATrainer().target_modules)
    except Exception as exc:  # noqa: BLE001
        print(f"SETUP FAILED: {type(exc).__name__}: {exc}\n{traceback.format_exc()}", flush=True)
        payload["setup_error"] = f"{type(exc).__name__}: {exc}"
        write_json(opts.json, payload)
        return 2
    print(f"setup {time.perf_counter() - t0:.1f} s; base model {base}; {opts.rows} rows; work {work}", flush=True)

    rows: list[dict] = []
    for method in methods:
        for device in devices:
            dtype = opts.cuda_dtype if device == "cuda" else opts.cpu_dtype
            if method == "rl":
                steps = opts.rl_steps if device == "cuda" else opts.cpu_rl_steps
            else:
                steps = opts.steps if device == "cuda" else opts.cpu_steps
            if opts.deadline_s and time.perf_counter() - t0 > opts.deadline_s:
                row = {
                    "method": method,
                    "device": device,
                    "dtype": dtype,
                    "ok": device != "cuda",
                    "skipped": True,
                    "note": f"past --deadline-s {opts.deadline_s:.0f}",
                }
                if device == "cuda":
                    row["error"] = row["note"]
                rows.append(row)
                continue
            print(f"[{time.perf_counter() - t0:6.1f} s] {method} on {device}/{dtype}, {steps} steps ...", flush=True)
            try:
                row = run_one(method, device, dtype, steps, base, data, opts, work)
            except Exception as exc:  # noqa: BLE001 - a failure after training (reading the adapter) is reported too
                row = {
                    "method": method,
                    "device": device,
                    "dtype": dtype,
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=-15),
                }
            merged_dir = row.pop("_merged_dir", None)
            status = "ok" if row["ok"] else f"FAIL: {row.get('error')}"
            print(
                f"[{time.perf_counter() - t0:6.1f} s]   {status}; s/step {row.get('s_per_step')}; losses "
                f"{row.get('first_loss')} -> {row.get('last_loss')}",
                flush=True,
            )
            if not row["ok"] and row.get("traceback"):
                print(row["traceback"], flush=True)
            rows.append(row)
            if method == "sft" and merged_dir and not opts.no_export:
                export_row = export_check(merged_dir, work, target_modules, f"{device}/{dtype}")
                print(
                    f"[{time.perf_counter() - t0:6.1f} s]   export_merged_gguf: "
                    f"{'ok' if export_row['ok'] else 'FAIL: ' + export_row.get('error', '?')}",
                    flush=True,
                )
                rows.append(export_row)
            if merged_dir:
                shutil.rmtree(Path(merged_dir).parent, ignore_errors=True)
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
            payload["results"] = rows
            payload["comparisons"] = comparisons(rows, devices)
            write_json(opts.json, payload)

    comps = comparisons(rows, devices)
    failures = [f"{r['method']} on {r['device']}/{r['dtype']}: {r.get('error')}" for r in rows if not r["ok"]]
    payload.update(results=rows, comparisons=comps, failures=failures, total_s=round(time.perf_counter() - t0, 1))
    print()
    print_table(rows)
    if comps:
        print("\nper-step speed, cpu vs cuda (steady state, median step after the first), and first-loss agreement:")
        for method, c in comps.items():
            agree = (
                f"; first loss cuda {c['first_loss_cuda']:.4f} vs cpu {c['first_loss_cpu']:.4f} "
                f"(rel diff {c['first_loss_rel_diff']:.2%})"
                if "first_loss_rel_diff" in c
                else ""
            )
            ratio = f"{c['cpu_over_cuda']:.1f}x" if "cpu_over_cuda" in c else "-"
            print(
                f"  {method:<13} cpu {fmt(c['cpu_s_per_step'], '.3f')} s/step, cuda {fmt(c['cuda_s_per_step'], '.3f')} "
                f"s/step: cuda is {ratio} faster{agree}"
            )
    print(f"\ntotal {payload['total_s']} s")
    write_json(opts.json, payload)
    if not opts.keep and not opts.work:
        shutil.rmtree(work, ignore_errors=True)
    cuda_failed = [
        f"{r['method']} on {r['device']}/{r['dtype']}: {r.get('error')}"
        for r in rows
        if not r["ok"] and r["device"] == "cuda"
    ]
    if cuda_failed:
        print(f"\nCUDA CHECK FAILED ({len(cuda_failed)} of {sum(r['device'] == 'cuda' for r in rows)} cuda runs):")
        for f in cuda_failed:
            print(f"  - {f}")
        return 1
    if failures:
        print(f"\nCPU RUNS FAILED ({len(failures)}):")
        for f in failures:
            print(f"  - {f}")
        return 3
    skipped = sum(bool(r.get("skipped")) for r in rows)
    print("\nALL RUNS PASSED on " + ", ".join(devices) + (f" ({skipped} skipped, see the table)" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
