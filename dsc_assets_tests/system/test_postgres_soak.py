"""Soak: four processes write overlapping keys to the PostgreSQL call cache at once for a bounded time (DSC_SOAK_S,
20 s), each also reading back what it wrote. Afterwards the table holds exactly the union of the keys they wrote,
each once, each row whole and the one its key stands for; the throughput is printed."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import time

import psycopg2

from resources.pg_cache import PostgresCallCache

WRITERS = 4
KEY_SPACE = 20000  # drawn from at random by every writer: many keys are written by more than one


def _response(key: str) -> dict:
    """What every writer of ``key`` writes (a cached call's answer depends only on its key)."""
    return {"text": f"answer for {key} " + hashlib.sha256(key.encode()).hexdigest(), "tokens": len(key)}


def _writer(url: str, seed: int, seconds: float, out: str) -> None:
    """One process: random keys for ``seconds``; after every 20 puts, a get_many of the last 20 must find them all."""
    cache, rng = PostgresCallCache(url), random.Random(seed)
    written, recent, missing, reads, puts = set(), [], 0, 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        key = f"soak-{rng.randrange(KEY_SPACE):05d}"
        cache.put(key, "chat", "soak-model", {"key": key}, _response(key), 0.01)
        written.add(key)
        puts += 1
        recent.append(key)
        if len(recent) == 20:
            found = cache.get_many(recent)
            missing += sum(1 for k in recent if found.get(k) != _response(k))
            reads, recent = reads + 1, []
    with open(out, "w") as handle:
        json.dump({"written": sorted(written), "puts": puts, "missing": missing, "reads": reads}, handle)


def test_four_writers_with_overlapping_keys_lose_and_duplicate_nothing(postgres_url, tmp_path):
    seconds = float(os.environ.get("DSC_SOAK_S", "20"))
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters, as separate machines' runs would be
    outs = [tmp_path / f"writer-{n}.json" for n in range(WRITERS)]
    PostgresCallCache(postgres_url).count()  # the table exists before they race (they would create it safely too)
    processes = [spawn.Process(target=_writer, args=(postgres_url, n, seconds, str(outs[n]))) for n in range(WRITERS)]
    started = time.monotonic()
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=seconds + 120)
        assert process.exitcode == 0, f"a writer failed (exit {process.exitcode})"
    elapsed = time.monotonic() - started
    reports = [json.loads(out.read_text()) for out in outs]
    union = set().union(*(set(r["written"]) for r in reports))
    attempts = sum(r["puts"] for r in reports)
    overlap = sum(len(r["written"]) for r in reports) - len(union)

    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT key) FROM calls")
        rows, distinct = cursor.fetchone()
        cursor.execute("SELECT key, response, request FROM calls")
        stored = {key: (json.loads(response), json.loads(request)) for key, response, request in cursor.fetchall()}
    connection.close()

    print(
        f"\nsoak: {WRITERS} processes, {elapsed:.1f} s: {attempts} puts ({attempts / elapsed:.0f} puts/s, each "
        f"its own committed transaction), {len(union)} rows ({len(union) / elapsed:.0f} new rows/s) ({overlap} written by more than one "
        f"writer), {sum(r['reads'] for r in reports)} get_many reads of 20 keys"
    )
    assert all(r["puts"] > 100 for r in reports), [r["puts"] for r in reports]  # every writer really ran
    assert overlap > 0, "the writers never wrote the same key: the test did not test overlap"
    assert rows == distinct == len(union)  # nothing lost, nothing duplicated
    assert set(stored) == union
    assert all(stored[key] == (_response(key), {"key": key}) for key in union)  # every row whole and right
    assert sum(r["missing"] for r in reports) == 0  # every writer read back every key it had written
