"""Generation over several servers: the OpenAI-compatible backend with one server against a pool of two, in one run.

    .venv/bin/python bench/scale_generation.py [--requests 24] [--max-tokens 48] [--rounds 2] [--concurrency 2]
        [--threads 1] [--json bench/results/scale_generation.json]

Two ``python -m llama_cpp.server`` processes with the 135M model (``--threads`` each, 1 by default) on 127.0.0.1.
Each side is ``OpenAICompatibleLLM.chat_many`` on the same chat requests (sentiment's system prompt and prompts) and
sampling parameters from a fresh call cache, so every row is really generated and committed: "1 server" is a pool of
server A alone, "2 servers" the pool of A and B, ``--concurrency`` requests in flight per server (llama-cpp-python's
server answers one at a time; 2 keeps it busy while the client commits). Rounds alternate the order (ABBA) and
change the seed, so drift in machine speed hits both sides alike and no side reads the other's answers.

Besides the ratio it checks ``dsc plan``'s estimate for the pool (``seconds_per_call``: one over the sum of the
per-server rates measured in a cache, times the calls) against the 2-server side's measured wall time, from each
side's cache: the 1-server cache (before adding B: B counts at A's measured rate) and the 2-server one.
The servers' CPU seconds per side (/proc) show how much of the machine they were given.
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
from dsc_assets.lib.tasks import load_task  # noqa: E402
from resources.llama_server import start_servers  # noqa: E402
from resources.openai_llm import Endpoint, OpenAICompatibleLLM  # noqa: E402
from resources.stores import CallCache  # noqa: E402


def chat_requests(task_name: str, count: int) -> list[list[dict]]:
    task = load_task(task_name)
    prompts = [p.prompt for p in task.prompts][:count]
    if len(prompts) < count:
        raise SystemExit(f"{task_name} has {len(prompts)} prompts; ask for at most that many requests")
    return [[{"role": "system", "content": task.spec.system_prompt}, {"role": "user", "content": p}] for p in prompts]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used (/proc/<pid>/stat), to see what the servers were given."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def run_side(urls: list[str], requests, params, concurrency: int, cache: Path, pids: list[int]) -> dict:
    pool = OpenAICompatibleLLM(
        cache_path=str(cache),
        endpoints=[Endpoint(url=u, max_concurrency=concurrency) for u in urls],
        model="smollm2",
        timeout_s=300,
    )
    started, cpu_started = time.perf_counter(), cpu_seconds(pids)
    out = pool.chat_many(requests, params)
    seconds = time.perf_counter() - started
    server_cpu_s = cpu_seconds(pids) - cpu_started
    assert pool.calls_made == len(requests), "a side must generate every row"
    return {
        "seconds": seconds,
        "server_cpu_s": server_cpu_s,
        "tokens": sum(g.completion_tokens for g in out),
        "calls": len(out),
        "per_server": {e["url"]: e["answers"] for e in pool.endpoint_report()},
        "texts": [g.text for g in out],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight per server")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per server")
    parser.add_argument("--task", default="sentiment")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="dsc-bench-scale-"))
    task = load_task(args.task)
    requests = chat_requests(args.task, args.requests)
    base = task.spec.sampling.model_copy(update={"max_tokens": args.max_tokens})
    load_before = os.getloadavg()
    servers = start_servers(2, model_cache_dir=".dsc/models", n_threads=args.threads, n_ctx=1024)
    urls = [s.base_url for s in servers]
    sides = {"1_server": urls[:1], "2_servers": urls}
    pids = [s.process.pid for s in servers]
    totals = {name: {"seconds": 0.0, "server_cpu_s": 0.0, "tokens": 0, "calls": 0} for name in sides}
    spread, same_texts = [], True
    try:
        for round_index in range(args.rounds):
            params = base.model_copy(update={"seed": base.seed + round_index})
            order = list(sides) if round_index % 2 == 0 else list(sides)[::-1]
            texts = {}
            for name in order:
                cache = workdir / f"{name}.duckdb"  # each round's seed makes its own keys: nothing is cached
                side = run_side(sides[name], requests, params, args.concurrency, cache, pids)
                for key in ("seconds", "server_cpu_s", "tokens", "calls"):
                    totals[name][key] += side[key]
                texts[name] = side["texts"]
                if name == "2_servers":
                    spread.append(side["per_server"])
                print(f"round {round_index} {name}: {side['calls']} calls, {side['seconds']:.1f} s", flush=True)
            same_texts &= texts["1_server"] == texts["2_servers"]

        # dsc plan's estimate for the 2-server side, from each side's cache: before adding B (A measured alone, B
        # counted at A's rate) and after (both measured in the pool)
        pool = OpenAICompatibleLLM(cache_path=":unused:", endpoints=[Endpoint(url=u) for u in urls], model="smollm2")
        estimate = {
            name: pool.seconds_per_call(CallCache(workdir / f"{name}.duckdb", read_only=True))
            * totals["2_servers"]["calls"]
            for name in sides
        }
    finally:
        for server in servers:
            server.stop()

    speed = {name: t["tokens"] / t["seconds"] for name, t in totals.items()}
    calls = {name: t["calls"] / t["seconds"] for name, t in totals.items()}
    measured = totals["2_servers"]["seconds"]
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "servers": f"python -m llama_cpp.server, smollm2-135m, {args.threads} thread(s) each",
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "concurrency_per_server": args.concurrency,
        "tokens_per_s": {name: round(v, 2) for name, v in speed.items()},
        "calls_per_s": {name: round(v, 3) for name, v in calls.items()},
        "ratio_2_over_1": round(speed["2_servers"] / speed["1_server"], 3),
        "server_cores_used": {name: round(t["server_cpu_s"] / t["seconds"], 2) for name, t in totals.items()},
        "tokens_per_server_cpu_s": {name: round(t["tokens"] / t["server_cpu_s"], 2) for name, t in totals.items()},
        "answers_per_server_2_servers": spread,
        "same_texts_1_and_2_servers": same_texts,
        "measured_2_servers_s": round(measured, 2),
        "plan_estimate_2_servers_s": {f"from_{name}_cache": round(v, 2) for name, v in estimate.items()},
        "plan_estimate_over_measured": {f"from_{name}_cache": round(v / measured, 3) for name, v in estimate.items()},
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
