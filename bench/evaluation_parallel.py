"""The evaluation's small models one after another on all cores, against side by side on one core each.

    python bench/evaluation_parallel.py [--models 2] [--requests 32] [--max-tokens 64] [--batch-size 16] [--rounds 2]
        [--json bench/results/evaluation_parallel.json]

Both sides answer the same chat requests (sentiment's system prompt and prompts) with the same seeded sampling, from
fresh call caches, with ``--models`` copies of the packaged 135M student (a checkpoint is the same network with other
weights; copies make separate llama.cpp contexts, as separate checkpoints do):

- ``one after another``: each model in turn, one context with every usable core (the evaluation before);
- ``side by side``: the evaluation's own rule (``resources.llm.side_by_side``): one 1-thread context per core, the
  models spread over a thread pool, the cores shared through ``DECODE_LOCK``'s budget.

Rounds alternate the order of the sides, so drift in machine speed hits both alike. Every answer must be the same on
both sides (the thread count does not change llama.cpp's arithmetic here; a test checks it too).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import resources.threads  # noqa: E402,F401  (OMP_WAIT_POLICY before llama_cpp loads)
from bench.generation import chat_requests  # noqa: E402
from resources.llm import LlamaCppLLM, SamplingParams, side_by_side  # noqa: E402
from resources.threads import usable_cores  # noqa: E402


def models(folder: Path, count: int, batch_size: int) -> list[LlamaCppLLM]:
    student = LlamaCppLLM(model="smollm2-135m", n_ctx=1024, batch_size=batch_size)
    copies = [shutil.copy(student.model_file().path, folder / f"model{k}.gguf") for k in range(count)]
    return [student.with_model(str(path)) for path in copies]


def run_side(side: str, llms: list[LlamaCppLLM], requests, params, folder: Path) -> tuple[float, int, list]:
    """(seconds, completion tokens, texts per model) of one side, each model on a fresh cache."""
    fresh = [
        type(llm)(**{**llm.model_dump(), "cache_path": str(folder / f"{side}-{k}-{time.time_ns()}.duckdb")})
        for k, llm in enumerate(llms)
    ]
    workers, threads = side_by_side(len(fresh)) if side == "side by side" else (1, None)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        answered = list(
            pool.map(
                lambda llm: (
                    llm.chat_many(requests, params)
                    if threads is None
                    else llm.with_threads(threads).chat_many(requests, params)
                ),
                fresh,
            )
        )
    seconds = time.perf_counter() - started
    return seconds, sum(g.completion_tokens for a in answered for g in a), [[g.text for g in a] for a in answered]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    requests = chat_requests("sentiment", args.requests)
    params = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens, seed=11)
    sides, totals, texts = ["one after another", "side by side"], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        llms = models(folder, args.models, args.batch_size)
        for llm in llms:  # load each model once before timing (the evaluation loads each checkpoint once too)
            llm.llama()
        for round_number in range(args.rounds):
            for side in sides if round_number % 2 == 0 else sides[::-1]:
                seconds, tokens, answers = run_side(side, llms, requests, params, folder)
                total = totals.setdefault(side, [0.0, 0])
                total[0], total[1] = total[0] + seconds, total[1] + tokens
                texts.setdefault(side, answers)
                print(f"round {round_number + 1}: {side}: {seconds:.1f} s, {tokens / seconds:.1f} tok/s", flush=True)
    rates = {side: tokens / seconds for side, (seconds, tokens) in totals.items()}
    same = texts[sides[0]] == texts[sides[1]]
    result = {
        "command": " ".join(["python", *sys.argv]),
        "cores": usable_cores(),
        "models": args.models,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "tok_per_s": {side: round(rate, 1) for side, rate in rates.items()},
        "speedup": round(rates["side by side"] / rates["one after another"], 2),
        "same_answers": same,
    }
    print(json.dumps(result, indent=2))
    if not same:
        raise SystemExit("the two sides gave different answers")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
