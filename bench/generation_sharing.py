"""Generation with each prompt prefilled whole, against shared prompt starts copied from a sequence in the context.

    python bench/generation_sharing.py [--model qwen2.5-coder-1.5b] [--task sentiment] [--prompts 16]
        [--max-tokens 64] [--batch-size 16] [--kinds almost,draft] [--rounds 2]
        [--json bench/results/generation_sharing.json]

ALMoST's prompted configurations (A, and the best-of-N samples of A) put the task's demonstrations before every
prompt, ~260 of a request's ~300-420 tokens; every chat of a task starts with its system prompt. Both sides send the
same requests through the pipeline's ``LlamaCppLLM.chat_many`` (chat template, cache, commits) with the study's
generator settings (n_ctx 2048, 16 sequences), from fresh call caches, rounds in ABBA order:

- ``whole``: every prompt prefilled from its first token (the engine before);
- ``shared``: ``BatchEngine.generate(share_prefixes=True)``, the default now (``resources/shared_prefill.py``).

Printed per side and kind of request: seconds (best round), prompt tokens prefilled, completion tokens per second,
and how many answers are the same text on both sides (a copied KV row was computed in another ubatch, so a sampled
token can flip where two are nearly tied; the draws are the same otherwise).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import resources.threads  # noqa: E402,F401  (OMP_WAIT_POLICY before llama_cpp loads)
from dsc_assets.lib.almost import config_messages  # noqa: E402
from dsc_assets.lib.chat import ChainMessages  # noqa: E402
from dsc_assets.lib.tasks import load_task  # noqa: E402
from resources.llm import LlamaCppLLM  # noqa: E402


def requests_of(kind: str, task, prompts: int) -> list[list[dict]]:
    train = [p for p in task.prompts if task.split_of(p.id) == "train"][:prompts]
    if kind == "almost":
        return [config_messages(task, "A", p.prompt) for p in train]
    return [ChainMessages(task).draft(p.prompt) for p in train]


def run_side(side: str, llm: LlamaCppLLM, requests, params) -> dict:
    llm._share_prefixes = side == "shared"
    engine = llm.engine()
    fed = engine.prefilled
    started = time.perf_counter()
    generations = llm.chat_many(requests, params)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "prefilled": engine.prefilled - fed,
        "completion_tokens": sum(g.completion_tokens for g in generations),
        "texts": [g.text for g in generations],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--kinds", default="almost,draft")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    task = load_task(args.task)
    params = task.sampling_for(args.max_tokens).model_copy(update={"max_tokens": args.max_tokens})
    sides, summary = ["whole", "shared"], {}
    with tempfile.TemporaryDirectory(prefix="dsc-generation-sharing-") as folder:
        for kind in args.kinds.split(","):
            requests, results = requests_of(kind, task, args.prompts), {side: [] for side in sides}
            for round_ in range(args.rounds):
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    llm = LlamaCppLLM(
                        model=args.model,
                        n_ctx=2048,
                        batch_size=args.batch_size,
                        cache_path=str(Path(folder) / f"{kind}-{side}-{round_}.duckdb"),
                    )
                    result = run_side(side, llm, requests, params)
                    results[side].append(result)
                    print(
                        f"{kind} round {round_} {side}: {result['seconds']:.1f} s, {result['prefilled']} tokens",
                        flush=True,
                    )
            row = {}
            for side in sides:
                best = min(results[side], key=lambda r: r["seconds"])
                row[side] = {
                    "seconds": round(best["seconds"], 2),
                    "prefilled_tokens": best["prefilled"],
                    "completion_tokens_per_s": round(best["completion_tokens"] / best["seconds"], 2),
                }
            row["speedup"] = round(row["whole"]["seconds"] / row["shared"]["seconds"], 2)
            row["tokens_saved_fraction"] = round(
                1 - row["shared"]["prefilled_tokens"] / row["whole"]["prefilled_tokens"], 3
            )
            same = [a == b for a, b in zip(results["whole"][0]["texts"], results["shared"][0]["texts"])]
            row["same_texts"] = f"{sum(same)} of {len(same)}"
            summary[kind] = row
    summary["setup"] = {k: v for k, v in vars(args).items() if k != "json"} | {
        "threads": resources.threads.llama_threads()
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
