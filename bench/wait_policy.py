"""OpenMP's wait policy against the trainer and llama.cpp: what OMP_WAIT_POLICY=PASSIVE (set by resources/threads.py
since llama.cpp beside other work busy-waited) costs a training step, and what a bounded spin buys back.

    python bench/wait_policy.py [--steps 6] [--json bench/results/wait_policy.json]

Each side is a fresh process (libgomp reads the policy once, at load) running, in one run and alternating order:
the bf16 and float32 matmul probe, ``LoRATrainer`` SFT and DPO steps on the study's settings (bench/precision.py's
rows; median seconds per step), and the 135M student's batched generation (``chat_many``, batch 8, a fresh cache).
A last side runs the generation while another process trains (the case the passive policy was for).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIDES = {
    "passive (today)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "libgomp default (spin 300k)": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": ""},
    "spin 10k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"},
}

CHILD = r"""
import json, os, sys, tempfile, time
sys.path.insert(0, ".")
sys.path.insert(0, "bench")
for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
    if os.environ.get(k) == "":
        del os.environ[k]
import resources.threads  # noqa: the pipeline's import order (setdefault: an explicit value stays)
if os.environ.get("DSC_UNSET_POLICY"):
    os.environ.pop("OMP_WAIT_POLICY", None)
from resources.precision import matmul_rates
from precision import datasets, run_one
out = {"policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"), "spin": os.environ.get("GOMP_SPINCOUNT", "(default)")}
out["probe"] = matmul_rates()
data = datasets(16)
for kind in filter(None, sys.argv[2].split(",")):
    r = run_one(kind, {"dtype": "float32"}, data[kind], int(sys.argv[1]))
    out[kind] = r["step_seconds"]
if sys.argv[3] == "gen":
    from resources.llm import LlamaCppLLM, SamplingParams
    from dsc_assets.lib.tasks import load_task
    task = load_task("sentiment")
    req = [[{"role": "system", "content": task.spec.system_prompt}, {"role": "user", "content": p.prompt}] for p in task.prompts[:16]]
    with tempfile.TemporaryDirectory() as d:
        llm = LlamaCppLLM(cache_path=f"{d}/c.duckdb", model="smollm2-135m", model_cache_dir=".dsc/models", n_ctx=2048, batch_size=8)
        llm.chat_many(req[:1], SamplingParams(max_tokens=4, seed=1))
        t = time.perf_counter()
        g = llm.chat_many(req, SamplingParams(max_tokens=96, seed=2))
        out["gen_tok_s"] = sum(x.completion_tokens for x in g) / (time.perf_counter() - t)
print("RESULT " + json.dumps(out))
"""


def side(env: dict, steps: int, kinds: str, gen: str) -> dict:
    full = {**os.environ, **env}
    if env.get("OMP_WAIT_POLICY") == "":
        full["DSC_UNSET_POLICY"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(steps), kinds, gen], cwd=ROOT, env=full, capture_output=True, text=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(lines[-1][7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in SIDES}
    order = list(SIDES)
    for round_ in range(args.rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            results[name].append(side(SIDES[name], args.steps, "sft,dpo", "gen"))
            print(f"{name}: {results[name][-1]} ({time.perf_counter() - started:.0f} s)", flush=True)
    # the case PASSIVE was for: generation while another process trains on the same cores
    contention = {}
    for name in ("passive (today)", "spin 10k", "libgomp default (spin 300k)"):
        trainer = subprocess.Popen(
            [sys.executable, "-c", CHILD, "40", "sft", "none"],
            cwd=ROOT,
            env={**os.environ, **SIDES[name]},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(25)  # the trainer is past its setup and stepping
        contention[name] = side(SIDES[name], 1, "", "gen")["gen_tok_s"]
        trainer.kill()
        trainer.wait()
        print(f"generation beside training, {name}: {contention[name]:.1f} tok/s", flush=True)
    result = {
        "command": " ".join(["python", "bench/wait_policy.py", *sys.argv[1:]]),
        "sides": results,
        "generation_beside_training_tok_s": contention,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
