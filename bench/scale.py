"""The shared deployment against the embedded default, in one run. Part ``cache``: the call cache's commit (``put``)
and lookup (``get_many``) latency, PostgreSQL (resources/pg_cache.py, a server started here on 127.0.0.1) against
the DuckDB file (resources/stores.py), and their ratios.

    .venv/bin/python bench/scale.py [--parts cache,warehouse] [--puts 300] [--spaced 20] [--writers 4] [--rounds 2]
        [--rows 1000] [--repeats 10] [--partition-writes 10] [--json bench/results/scale.json]

Part ``warehouse``: bench/scale_warehouse.py (a partition's write and read, PostgreSQL and Delta against DuckDB).

Each store gets the same rows (a chat call's request and answer, ~1.5 KB) under fresh keys, through the interface the
resources use:

- ``put``, back to back: one process commits ``--puts`` rows in a loop (the cache's best case: DuckDB keeps its
  file open between operations less than 0.3 s apart);
- ``put``, spaced: ``--spaced`` commits 0.5 s apart, as generation commits each answer when it arrives (DuckDB
  has closed the file by the next one and opens it again; PostgreSQL keeps its pooled connection);
- ``get_many`` of 1 and of 64 keys (a batch's lookup), over the rows written;
- ``--writers`` processes committing ``--puts`` rows each at once: puts per second in all, and each put's latency
  (DuckDB lets one process at a time hold the file, so the others wait their turn; PostgreSQL takes them together).

Rounds alternate the order (ABBA), so drift in the machine's speed hits both stores alike. The server runs with
PostgreSQL's defaults (``fsync`` and ``synchronous_commit`` on: every commit waits for its write-ahead log on disk).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resources.postgres_server import PostgresServer  # noqa: E402
from resources.stores import close_all, open_cache  # noqa: E402

REQUEST = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant who answers kindly and precisely. " * 4},
        {"role": "user", "content": "Tell me what you think about rainy days in the city, in a few sentences. " * 4},
    ],
    "params": {"temperature": 0.7, "max_tokens": 96, "seed": 0},
}


def _response(n: int) -> dict:
    return {"text": f"Answer {n}: " + "Rain washes the streets and slows the city down. " * 12, "tokens": 96}


def _summary(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _puts(location: str, prefix: str, count: int, pause_s: float = 0.0) -> list[float]:
    cache, latencies = open_cache(location), []
    for n in range(count):
        started = time.perf_counter()
        cache.put(f"{prefix}-{n:06d}", "chat", "bench-model", REQUEST, _response(n), 1.0)
        latencies.append(time.perf_counter() - started)
        if pause_s:
            time.sleep(pause_s)
    return latencies


def _lookups(location: str, keys: list[str], size: int, repeats: int) -> list[float]:
    cache, latencies = open_cache(location), []
    for r in range(repeats):
        chosen = [keys[(r * size + i) % len(keys)] for i in range(size)]
        started = time.perf_counter()
        found = cache.get_many(chosen)
        latencies.append(time.perf_counter() - started)
        assert len(found) == len(set(chosen)), "a lookup missed rows it had just written"
    return latencies


def _writer(location: str, prefix: str, count: int, out: str, barrier) -> None:
    open_cache(location, read_only=True).count()  # imports done and the driver loaded before the clock starts
    close_all()
    barrier.wait()
    started = time.time()
    latencies = _puts(location, prefix, count)
    ended = time.time()
    close_all()
    Path(out).write_text(json.dumps({"latencies": latencies, "started": started, "ended": ended}))


def _concurrent(location: str, prefix: str, writers: int, count: int, folder: Path) -> dict:
    """``writers`` processes start committing together (a barrier, after their imports); puts per second from the
    first one's start to the last one's end."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(writers)
    outs = [folder / f"{prefix}-w{n}.json" for n in range(writers)]
    processes = [
        spawn.Process(target=_writer, args=(location, f"{prefix}-w{n}", count, str(outs[n]), barrier))
        for n in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"a writer on {location} failed (exit {process.exitcode})")
    reports = [json.loads(out.read_text()) for out in outs]
    latencies = [s for r in reports for s in r["latencies"]]
    elapsed = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    return {
        "writers": writers,
        "puts": len(latencies),
        "seconds": round(elapsed, 2),
        "puts_per_s": round(len(latencies) / elapsed, 1),
        "put": _summary(latencies),
    }


def measure_store(location: str, prefix: str, args, folder: Path) -> dict:
    back_to_back = _puts(location, f"{prefix}-b2b", args.puts)
    spaced = _puts(location, f"{prefix}-spaced", args.spaced, pause_s=0.5)
    keys = [f"{prefix}-b2b-{n:06d}" for n in range(args.puts)]
    single = _lookups(location, keys, 1, 200)
    batch = _lookups(location, keys, 64, 100)
    close_all()  # the writers below open their own connections; this process must not hold DuckDB's file
    concurrent = _concurrent(location, f"{prefix}-conc", args.writers, args.puts, folder)
    count = open_cache(location, read_only=True).count()
    close_all()
    return {
        "put_back_to_back": _summary(back_to_back),
        "put_spaced_0.5s": _summary(spaced),
        "get_many_1": _summary(single),
        "get_many_64": _summary(batch),
        "concurrent_writers": concurrent,
        "rows": count,
    }


def _merge(rounds: list[dict]) -> dict:
    """Each measure over all rounds: latencies' medians of the rounds' medians (p95 and means likewise)."""
    merged = {}
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        if name == "rows":
            merged[name] = values
        elif name == "concurrent_writers":
            merged[name] = {
                "puts_per_s": round(statistics.median(v["puts_per_s"] for v in values), 1),
                "put_median_ms": round(statistics.median(v["put"]["median_ms"] for v in values), 3),
                "put_p95_ms": round(statistics.median(v["put"]["p95_ms"] for v in values), 3),
                "rounds": values,
            }
        else:
            merged[name] = {
                k: round(statistics.median(v[k] for v in values), 3) for k in ("median_ms", "p95_ms", "mean_ms")
            }
    return merged


def cache_part(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="dsc-bench-scale-"))
    results: dict[str, list[dict]] = {"postgres": [], "duckdb": []}
    with PostgresServer() as server:
        for round_index in range(args.rounds):
            order = ["postgres", "duckdb"] if round_index % 2 == 0 else ["duckdb", "postgres"]
            for store in order:
                location = (
                    server.create_database(f"bench_{round_index}")
                    if store == "postgres"
                    else str(folder / f"cache-{round_index}.duckdb")
                )
                print(f"cache: round {round_index + 1}: {store} ...", flush=True)
                results[store].append(measure_store(location, f"r{round_index}", args, folder))
    merged = {store: _merge(rounds) for store, rounds in results.items()}
    pg, duck = merged["postgres"], merged["duckdb"]
    ratios = {
        name: round(pg[name]["median_ms"] / duck[name]["median_ms"], 3)
        for name in ("put_back_to_back", "put_spaced_0.5s", "get_many_1", "get_many_64")
    }
    ratios["concurrent_puts_per_s"] = round(
        pg["concurrent_writers"]["puts_per_s"] / duck["concurrent_writers"]["puts_per_s"], 3
    )
    ratios["concurrent_put_p95"] = round(
        pg["concurrent_writers"]["put_p95_ms"] / duck["concurrent_writers"]["put_p95_ms"], 3
    )
    return {"stores": merged, "ratios_postgres_over_duckdb": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="cache", help="comma-separated parts to run (cache, warehouse)")
    parser.add_argument("--rows", type=int, default=1000, help="warehouse: rows in the partition")
    parser.add_argument("--repeats", type=int, default=10, help="warehouse: timed writes and reads per round")
    parser.add_argument("--partition-writes", type=int, default=10, help="warehouse: writes per concurrent writer")
    parser.add_argument("--puts", type=int, default=300, help="rows per back-to-back run and per concurrent writer")
    parser.add_argument("--spaced", type=int, default=20, help="commits 0.5 s apart")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report = {
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": os.getloadavg()},
    }
    if "cache" in args.parts.split(","):
        report["cache"] = cache_part(args)
    if "warehouse" in args.parts.split(","):
        from bench.scale_warehouse import warehouse_part

        report["warehouse"] = warehouse_part(args)
    report["machine"]["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    if args.json:  # parts not run this time keep their earlier results
        path = Path(args.json)
        earlier = json.loads(path.read_text()) if path.exists() else {}
        earlier.setdefault("runs", {})
        for part in args.parts.split(","):
            earlier[part] = report[part]
            earlier["runs"][part] = {"command": report["command"], "machine": report["machine"]}
        path.write_text(json.dumps(earlier, indent=2) + "\n")


if __name__ == "__main__":
    main()
