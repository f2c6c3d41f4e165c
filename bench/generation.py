"""Generation throughput: the pipeline's LLM resource vs bare llama-cpp-python, side by side in one run.

    python bench/generation.py [--model qwen2.5-coder-1.5b] [--prompts 12] [--max-tokens 96] [--rounds 2]

Both sides load the same GGUF with the same settings and answer the same chat requests with the same seed;
rounds alternate in ABBA order (bare then pipeline, pipeline then bare, ...) so drift in machine speed
and warm-up hit both sides alike. Prints tokens/s of
each, the throughput ratio pipeline/bare (goal >= 0.95), and the speed-up of a second identical pipeline run
served from the call cache.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsc_assets.tasks import load_task  # noqa: E402
from resources.llm import LlamaCppLLM, SamplingParams  # noqa: E402
from resources.models import resolve_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    task = load_task(args.task)
    requests = [
        [{"role": "system", "content": task.spec.system_prompt}, {"role": "user", "content": p.prompt}]
        for p in task.prompts[: args.prompts]
    ]
    params = task.spec.sampling.model_copy(update={"max_tokens": args.max_tokens})
    workdir = Path(tempfile.mkdtemp(prefix="dsc-bench-"))
    threads = os.cpu_count() or 1
    model = resolve_model(args.model, Path(".dsc/models"))

    from llama_cpp import Llama

    bare = Llama(model_path=str(model.path), n_ctx=args.n_ctx, n_threads=threads, n_threads_batch=threads,
                 n_batch=512, verbose=False)
    # Both sides answer one untimed request first: page faults of the memory-mapped weights and llama.cpp's
    # first-call allocations are start-up, not throughput, and would otherwise land on whichever side runs first.
    bare.create_chat_completion(messages=requests[0], max_tokens=8)
    LlamaCppLLM(cache_path=str(workdir / "warm-up.duckdb"), model=args.model, model_cache_dir=".dsc/models",
                n_ctx=args.n_ctx).llama().create_chat_completion(messages=requests[0], max_tokens=8)  # shared per process

    def run_bare(params: SamplingParams) -> tuple[float, int, list[str]]:
        started, tokens, texts = time.perf_counter(), 0, []
        for messages in requests:
            bare.reset()
            bare.set_seed(params.seed)
            out = bare.create_chat_completion(
                messages=messages, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                max_tokens=params.max_tokens, repeat_penalty=params.repeat_penalty, seed=params.seed,
            )
            tokens += out["usage"]["completion_tokens"]
            texts.append(out["choices"][0]["message"]["content"].strip())
        return time.perf_counter() - started, tokens, texts

    def run_pipeline(params: SamplingParams, cache: Path) -> tuple[float, int, list[str], int]:
        llm = LlamaCppLLM(cache_path=str(cache), model=args.model, model_cache_dir=".dsc/models", n_ctx=args.n_ctx)
        llm.llama()  # load outside the timed window, like the bare side's Llama() above (a 1.1 GB load is seconds)
        started = time.perf_counter()
        generations = llm.chat_many(requests, params)
        return (time.perf_counter() - started, sum(g.completion_tokens for g in generations),
                [g.text for g in generations], llm.calls_made)

    bare_s = pipe_s = 0.0
    bare_tok = pipe_tok = 0
    for round_index in range(args.rounds):
        # A new seed per round: the pipeline must really generate (no cache hit) in every round.
        round_params = params.model_copy(update={"seed": params.seed + round_index})
        cache = workdir / f"cache-{round_index}.duckdb"
        if round_index % 2 == 0:  # ABBA order: whichever side runs first in a round runs second in the next
            (b_s, b_tok, bare_texts), (p_s, p_tok, pipe_texts, calls) = run_bare(round_params), run_pipeline(round_params, cache)
        else:
            (p_s, p_tok, pipe_texts, calls), (b_s, b_tok, bare_texts) = run_pipeline(round_params, cache), run_bare(round_params)
        bare_s, bare_tok, pipe_s, pipe_tok = bare_s + b_s, bare_tok + b_tok, pipe_s + p_s, pipe_tok + p_tok
        assert calls == len(requests), "the pipeline side must not hit the cache in a timed round"
        assert pipe_texts == bare_texts, "same model, same seed: both sides must produce the same text"

    cached_s, _, _, cached_calls = run_pipeline(
        params.model_copy(update={"seed": params.seed + args.rounds - 1}), workdir / f"cache-{args.rounds - 1}.duckdb"
    )
    last_round_s = pipe_s / args.rounds
    result = {
        "model": args.model,
        "requests_per_round": len(requests),
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "bare_tokens_per_s": round(bare_tok / bare_s, 2),
        "pipeline_tokens_per_s": round(pipe_tok / pipe_s, 2),
        "throughput_ratio_pipeline_over_bare": round((pipe_tok / pipe_s) / (bare_tok / bare_s), 3),
        "cached_rerun_seconds": round(cached_s, 4),
        "cached_rerun_model_calls": cached_calls,
        "cache_speedup": round(last_round_s / cached_s, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\npipeline/bare throughput: {result['throughput_ratio_pipeline_over_bare']:.3f} (goal >= 0.95); "
          f"cached rerun: {result['cache_speedup']:.0f}x faster, {cached_calls} model calls")


if __name__ == "__main__":
    main()
