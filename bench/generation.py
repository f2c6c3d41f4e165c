"""Generation throughput: batched decoding vs one answer at a time, against the machine's prefill speed.

    DSC_LLAMA_THREADS=1 python bench/generation.py [--models smollm2-135m,qwen2.5-coder-1.5b] [--batch-sizes 4,8]
        [--rounds 2] [--max-tokens 64] [--step-costs 1,8,32] [--bare] [--server] [--json bench/results/generation.json]

For each model, every side is the pipeline's ``LlamaCppLLM.chat_many`` on the same chat requests (a task's system
prompt and train prompts) with the same sampling parameters and token budget, from a fresh call cache, so each side
really generates and commits every row: batch size 1 (today's one-at-a-time pipeline; the engine at batch size 1
reproduces ``create_chat_completion`` token for token, a test checks) and each batch size asked for. Rounds
alternate the order of the sides (rotating), so drift in machine speed hits all sides alike. The ceiling is the same
model's prefill speed (a 256-token prompt in one ``llama_decode``), measured inside every round. Threads: the thread
rule (``resources/threads.py``: DSC_LLAMA_THREADS, else every core this process may use).

``--bare`` adds bare ``create_chat_completion`` without the cache (the code path before batching) as a side and checks
that batch size 1 gives its texts. ``--server`` also measures the OpenAI-compatible backend against ``python -m llama_cpp.server`` (135M model) with
``max_concurrency`` 1 vs 4, if llama-cpp-python's server extra is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import resources.threads  # noqa: E402,F401  (OMP_WAIT_POLICY before llama_cpp loads)
from dsc_assets.lib.tasks import load_task  # noqa: E402
from resources.llm import LlamaCppLLM, SamplingParams  # noqa: E402
from resources.openai_llm import OpenAICompatibleLLM
from resources.threads import llama_threads  # noqa: E402

DEFAULT_PROMPTS = {"smollm2-135m": 24, "qwen2.5-coder-1.5b": 8}


def chat_requests(task_name: str, count: int) -> list[list[dict]]:
    task = load_task(task_name)
    prompts = [p.prompt for p in task.prompts]
    prompts = (prompts * (count // len(prompts) + 1))[:count]
    return [[{"role": "system", "content": task.spec.system_prompt}, {"role": "user", "content": p}] for p in prompts]


def prefill_tokens_per_s(llama, tokens: list[int]) -> tuple[float, float]:
    """Prefill speed of one prompt: tokens per wall-clock second and per CPU second of this process."""
    llama.reset()
    started, cpu_started = time.perf_counter(), time.process_time()
    llama.eval(tokens)
    return len(tokens) / (time.perf_counter() - started), len(tokens) / max(time.process_time() - cpu_started, 1e-9)


def bare_chat_many(llama, requests: list[list[dict]], params: SamplingParams) -> list[tuple[str, int]]:
    """The pipeline before batching, without its cache: reset, re-seed, create_chat_completion, one request at a time."""
    out = []
    for messages in requests:
        llama.reset()
        llama.set_seed(params.seed)
        answer = llama.create_chat_completion(
            messages=messages,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_tokens=params.max_tokens,
            repeat_penalty=params.repeat_penalty,
            seed=params.seed,
            stop=list(params.stop) or None,
        )
        out.append(((answer["choices"][0]["message"]["content"] or "").strip(), answer["usage"]["completion_tokens"]))
    return out


def bench_model(
    model: str,
    requests: list[list[dict]],
    params: SamplingParams,
    batch_sizes: list[int],
    rounds: int,
    n_ctx: int,
    workdir: Path,
    bare: bool = False,
) -> dict:
    sides: list = [1, *batch_sizes] + (["bare"] if bare else [])
    import resources.batched

    resources.batched.MAX_ENGINES = len(sides) + 1  # keep every side's context: none is rebuilt in a timed round
    llms = {
        b: LlamaCppLLM(
            cache_path=str(workdir / f"{model}-warm-{b}.duckdb"),
            model=model,
            model_cache_dir=".dsc/models",
            n_ctx=n_ctx,
            batch_size=b,
        )
        for b in sides
        if b != "bare"
    }
    for llm in llms.values():  # load and warm every context outside the timed rounds (page faults, allocations)
        llm.chat_many(requests[: llm.batch_size], params.model_copy(update={"max_tokens": 4, "seed": 999_999}))
    llama = llms[1].llama()
    filler = llama.tokenize(" ".join(m[1]["content"] for m in requests).encode(), add_bos=False)
    ceiling_tokens = (filler * (256 // max(len(filler), 1) + 1))[:256]
    prefill_tokens_per_s(llama, ceiling_tokens)

    seconds = {b: 0.0 for b in sides}
    cpu_seconds = {b: 0.0 for b in sides}
    tokens = {b: 0 for b in sides}
    prefill: list[tuple[float, float]] = []
    for round_index in range(rounds):
        order = sides[round_index % len(sides) :] + sides[: round_index % len(sides)]
        round_params = params.model_copy(update={"seed": params.seed + round_index})  # no cache hit across rounds
        texts = {}
        for b in order:
            started, cpu_started = time.perf_counter(), time.process_time()
            if b == "bare":
                answers = bare_chat_many(llama, requests, round_params)
            else:
                llm = LlamaCppLLM(
                    **{**llms[b].model_dump(), "cache_path": str(workdir / f"{model}-{round_index}-{b}.duckdb")}
                )
                generations = llm.chat_many(requests, round_params)
                answers = [(g.text, g.completion_tokens) for g in generations]
                assert llm.calls_made == len(requests), "every row must really be generated in a timed round"
            seconds[b] += time.perf_counter() - started
            cpu_seconds[b] += time.process_time() - cpu_started
            tokens[b] += sum(n for _, n in answers)
            texts[b] = [t for t, _ in answers]
            prefill.append(prefill_tokens_per_s(llama, ceiling_tokens))
            print(f"  {model} round {round_index + 1} batch {b}: {tokens[b] / seconds[b]:.1f} tok/s so far", flush=True)
        if "bare" in texts:
            assert texts["bare"] == texts[1], "batch size 1 must reproduce create_chat_completion"
    ceiling = sorted(p[0] for p in prefill)[len(prefill) // 2]
    cpu_ceiling = sorted(p[1] for p in prefill)[len(prefill) // 2]
    speed = {b: tokens[b] / seconds[b] for b in sides}
    cpu_speed = {b: tokens[b] / max(cpu_seconds[b], 1e-9) for b in sides}
    # On a shared machine the wall clock also counts time this process waited for a core; tokens per CPU second of
    # this process measure the work per token (the batching effect) without that wait.
    return {
        "model": model,
        "requests": len(requests),
        "max_tokens": params.max_tokens,
        "rounds": rounds,
        "threads": llama_threads(),
        "prefill_tokens_per_s": round(ceiling, 1),
        "prefill_tokens_per_cpu_s": round(cpu_ceiling, 1),
        "sides": {
            ("bare_create_chat_completion" if b == "bare" else f"batch_{b}"): {
                "tokens_per_s": round(speed[b], 2),
                "completion_tokens": tokens[b],
                "seconds": round(seconds[b], 2),
                "ratio_to_batch_1": round(speed[b] / speed[1], 3),
                "fraction_of_prefill": round(speed[b] / ceiling, 3),
                "tokens_per_cpu_s": round(cpu_speed[b], 2),
                "cpu_ratio_to_batch_1": round(cpu_speed[b] / cpu_speed[1], 3),
                "cpu_fraction_of_prefill": round(cpu_speed[b] / cpu_ceiling, 3),
            }
            for b in sides
        },
    }


def step_costs(model: str, sizes: list[int], steps: int = 10, context: int = 400) -> dict[str, dict[str, float]]:
    """Wall tokens/s and CPU ms per generated token of one decode step with n sequences in flight, each with
    ``context`` tokens already in the KV cache (a prompt plus part of an answer), no sampling; for the engine's KV
    layout (one stream per sequence) and for one unified stream, where every token's attention spans every
    sequence's cells."""
    from resources.batched import BatchEngine
    from resources.llm import load_llama
    from resources.models import resolve_model

    llama = load_llama(resolve_model(model, ".dsc/models").path, 1024, llama_threads(), 512)
    text = b"Tell me a long story about a dragon and a knight in a castle far away. "
    tokens = llama.tokenize(text * (context // 8 + steps), add_bos=False)
    costs: dict[str, dict[str, float]] = {}
    for layout, unified in (("per_sequence_kv", False), ("unified_kv", True)):
        for n in sizes:
            engine = BatchEngine(llama, n, 1024, llama_threads(), 512, kv_unified=unified)
            engine._clear()
            for seq in range(n):  # fill each sequence's context in 256-token chunks
                for start in range(0, context, 256):
                    engine._batch.n_tokens = 0
                    for pos in range(start, min(context, start + 256)):
                        engine._add(tokens[pos], pos, seq, pos == context - 1)
                    engine._decode()
            cpu = wall = 0.0
            for step in range(steps + 2):
                engine._batch.n_tokens = 0
                for seq in range(n):
                    engine._add(tokens[context + step], context + step, seq, True)
                started, started_cpu = time.perf_counter(), time.process_time()
                engine._decode()
                if step >= 2:  # the first steps build and allocate the graph
                    wall += time.perf_counter() - started
                    cpu += time.process_time() - started_cpu
            engine.close()
            costs.setdefault(layout, {})[f"n_{n}"] = {
                "tokens_per_s": round(steps * n / wall, 1),
                "cpu_ms_per_token": round(cpu / steps / n * 1000, 2),
            }
            print(f"  {model} {layout}: {n} sequences per step: {costs[layout][f'n_{n}']}", flush=True)
    return costs


def bench_server(requests: list[list[dict]], params: SamplingParams, rounds: int, workdir: Path) -> dict:
    missing = [
        m
        for m in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        return {"skipped": f"llama-cpp-python's server extra is not installed (missing: {', '.join(missing)})"}
    from resources.models import resolve_model

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = resolve_model("smollm2-135m", ".dsc/models")
    threads = str(llama_threads())
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model.path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            threads,
            "--n_threads_batch",
            threads,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base_url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    return {"skipped": "llama_cpp.server did not start"}
                time.sleep(0.5)
        seconds, tokens = {1: 0.0, 4: 0.0}, {1: 0, 4: 0}
        for round_index in range(rounds):
            for concurrency in [1, 4] if round_index % 2 == 0 else [4, 1]:
                client = OpenAICompatibleLLM(
                    cache_path=str(workdir / f"server-{round_index}-{concurrency}.duckdb"),
                    base_url=base_url,
                    model="smollm2",
                    max_concurrency=concurrency,
                )
                started = time.perf_counter()
                out = client.chat_many(requests, params.model_copy(update={"seed": params.seed + round_index}))
                seconds[concurrency] += time.perf_counter() - started
                tokens[concurrency] += sum(g.completion_tokens for g in out)
        speed = {c: tokens[c] / seconds[c] for c in seconds}
        return {
            "server": "python -m llama_cpp.server (one model instance, requests served one at a time)",
            "tokens_per_s": {f"max_concurrency_{c}": round(v, 2) for c, v in speed.items()},
            "ratio_4_over_1": round(speed[4] / speed[1], 3),
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-1.5b")
    parser.add_argument("--task", default="sentiment")
    parser.add_argument(
        "--prompts", type=int, help="requests per round (default: 24 for the 135M model, 8 for the teacher)"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="4,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument(
        "--step-costs",
        help="also measure tokens/s and CPU ms per token of one decode step (400 tokens of "
        "context per sequence, both KV layouts) at these numbers of "
        "sequences, e.g. 1,8,32 (no sampling, no cache)",
    )
    parser.add_argument("--bare", action="store_true", help="also time bare create_chat_completion (the old path)")
    parser.add_argument(
        "--server", action="store_true", help="also measure max_concurrency 1 vs 4 against llama_cpp.server"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    import llama_cpp

    from resources.llama_build import installed_marker

    system_info = llama_cpp.llama_print_system_info().decode().strip()
    marker = installed_marker()
    print(
        f"llama.cpp build: {system_info}\ninstalled build: {json.dumps(marker)}\nthreads: {llama_threads()} "
        f"(of {len(os.sched_getaffinity(0))} usable cores), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="dsc-bench-"))
    task = load_task(args.task)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    results = {"cpu_features": system_info, "llama_build": marker, "threads": llama_threads(), "models": []}
    for model in args.models.split(","):
        requests = chat_requests(args.task, args.prompts or DEFAULT_PROMPTS.get(model, 8))
        params = task.spec.sampling.model_copy(update={"max_tokens": args.max_tokens})
        if args.step_costs:
            results.setdefault("step_costs", {})[model] = step_costs(
                model, [int(n) for n in args.step_costs.split(",")]
            )
        if args.rounds == 0:  # --rounds 0: only the step costs
            continue
        results["models"].append(
            bench_model(model, requests, params, batch_sizes, args.rounds, args.n_ctx, workdir, args.bare)
        )
    if args.server:
        params = task.spec.sampling.model_copy(update={"max_tokens": args.max_tokens})
        results["server"] = bench_server(chat_requests(args.task, 8), params, args.rounds, workdir)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print()
    for model in results["models"]:
        line = "; ".join(
            f"{k.replace('_', ' ')}: {v['tokens_per_s']} tok/s (x{v['ratio_to_batch_1']}, "
            f"{v['fraction_of_prefill']:.0%} of prefill), {v['tokens_per_cpu_s']} tok/CPU-s "
            f"(x{v['cpu_ratio_to_batch_1']}, {v['cpu_fraction_of_prefill']:.0%})"
            for k, v in model["sides"].items()
        )
        print(
            f"{model['model']}: prefill {model['prefill_tokens_per_s']} tok/s, {model['prefill_tokens_per_cpu_s']} "
            f"tok/CPU-s; {line}"
        )
    if "server" in results:
        print(f"server: {json.dumps(results['server'])}")


if __name__ == "__main__":
    main()
