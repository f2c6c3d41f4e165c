"""The LLM judge's scoring with each prompt prefilled whole, against shared prompt starts computed once.

    python bench/judge_sharing.py [--judge qwen2.5-coder-1.5b] [--requests 3] [--answers 16] [--batch-size 8]
        [--rounds 2] [--json bench/results/judge_sharing.json]

A study's evaluation asks the judge about every answer of every model to every test prompt (9 models x 3 samples = 27
answers a request), and every judge prompt starts with the same instructions and, for the answers to one request,
the same request. Both sides score the same (request, answer) pairs with the task's judge (safety's question), from
fresh call caches, with the study's judge settings (the teacher, n_ctx 2048, 8 sequences per context):

- ``whole``: every judge prompt prefilled from its first token (the engine before);
- ``shared``: ``BatchEngine.score(share_prefixes=True)``, the judge's default now (``resources/shared_prefill.py``).

The requests are safety's test prompts; the answers are real ones, the teacher's and ALMoST's answers to safety
prompts from the study's carried call cache (``reports/study/calls.parquet``), ``--answers`` of them per request (the
judge's cost depends on the texts' lengths, not on whether an answer fits its request). Rounds alternate the order of
the sides. Printed per side: seconds, prompt tokens per second, the tokens each side prefilled, and the largest
difference between the two sides' scores (rounding: a copied KV row was computed in another ubatch).
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
from dsc_assets.lib.tasks import load_task  # noqa: E402
from resources.rewards import RewardModels  # noqa: E402

CALLS = Path(__file__).resolve().parent.parent / "reports" / "study" / "calls.parquet"


def pairs(requests: int, answers: int) -> tuple[list[str], list[str]]:
    """(prompts, responses): ``requests`` safety test prompts, each with ``answers`` distinct real answers."""
    import pandas as pd

    task = load_task("safety")
    prompts = [p.prompt for p in task.prompts if task.split_of(p.id) == "test"][:requests]
    calls = pd.read_parquet(CALLS)
    safety_prompts, texts = {p.prompt for p in task.prompts}, []
    for _, row in calls[calls["kind"] == "chat"].iterrows():
        messages = json.loads(row["request"])["messages"]
        if messages[-1]["role"] == "user" and messages[-1]["content"] in safety_prompts:  # an answer, not a critique
            texts.append(json.loads(row["response"])["text"])
    texts = sorted(set(texts))
    if len(texts) < requests * answers:
        raise SystemExit(f"{CALLS} holds {len(texts)} safety answers; ask for fewer than {requests} x {answers}")
    flat_prompts = [p for p in prompts for _ in range(answers)]
    return flat_prompts, texts[: requests * answers]


def run_side(side: str, models: RewardModels, task, prompts, responses) -> dict:
    judge = models.for_task(task.spec.scorer)
    judge.share_prefixes = side == "shared"
    engine = judge.model.engine()
    fed = engine.prefilled
    started = time.perf_counter()
    scores = judge.score(prompts, responses)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "prefilled": engine.prefilled - fed, "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", default="qwen2.5-coder-1.5b")
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--answers", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    task = load_task("safety")
    if task.spec.scorer.name != "judge":
        raise SystemExit("safety's scorer is not the judge any more: pick a judged task")
    prompts, responses = pairs(args.requests, args.answers)
    sides, results = ["whole", "shared"], {"whole": [], "shared": []}
    with tempfile.TemporaryDirectory(prefix="dsc-judge-sharing-") as folder:
        for round_ in range(args.rounds):
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                models = RewardModels(
                    cache_path=str(Path(folder) / f"{side}-{round_}.duckdb"),
                    judge_model=args.judge,
                    n_ctx=2048,
                    batch_size=args.batch_size,
                )
                result = run_side(side, models, task, prompts, responses)
                results[side].append(result)
                print(f"round {round_} {side}: {result['seconds']:.1f} s, {result['prefilled']} tokens", flush=True)
    summary = {}
    for side in sides:
        best = min(results[side], key=lambda r: r["seconds"])
        summary[side] = {
            "seconds": round(best["seconds"], 2),
            "prefilled_tokens": best["prefilled"],
            "prefilled_tokens_per_s": round(best["prefilled"] / best["seconds"], 1),
            "scores_per_s": round(len(prompts) / best["seconds"], 3),
        }
    whole_tokens = summary["whole"]["prefilled_tokens"]
    summary["speedup"] = round(summary["whole"]["seconds"] / summary["shared"]["seconds"], 2)
    summary["tokens_saved_fraction"] = round(1 - summary["shared"]["prefilled_tokens"] / whole_tokens, 3)
    summary["max_score_difference"] = round(
        max(abs(a - b) for a, b in zip(results["whole"][0]["scores"], results["shared"][0]["scores"])), 4
    )
    summary["setup"] = {
        "judge": args.judge,
        "requests": args.requests,
        "answers_per_request": args.answers,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "threads": resources.threads.llama_threads(),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
