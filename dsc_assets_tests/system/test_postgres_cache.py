"""The call cache on a real PostgreSQL server (started by the tests on 127.0.0.1): the same answers and keys as the
DuckDB file, generation with the real 135M model served from it on a rerun, `dsc cache copy` both ways, and a
server restarted mid-use."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from dsc_assets_tests.conftest import run_cli
from resources import pg_cache
from resources.llm import LlamaCppLLM, SamplingParams
from resources.pg_cache import CacheUnavailableError, PostgresCallCache
from resources.stores import CallCache, open_cache

PARAMS = SamplingParams(temperature=0.9, max_tokens=16, seed=3)
QUESTIONS = ["Name a fruit.", "Write one sentence about the sea.", "What is 2 + 3?"]


def _messages(question: str) -> list[dict]:
    return [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": question}]


def _fill(cache, count: int, prefix: str = "k") -> None:
    for n in range(count):
        endpoint = {"endpoint": f"http://10.0.0.{n % 2}:8000/v1"} if n % 3 else {}
        cache.put(
            f"{prefix}{n:04d}",
            "chat" if n % 4 else "score",
            f"model-{n % 2}",
            {"messages": [{"role": "user", "content": f"question {n} é"}], "params": {"seed": n}},
            {"text": f"answer {n} ✓", "tokens": n, **endpoint},
            0.25 * (n % 5),
        )


def test_open_cache_picks_the_store_by_location(postgres_url, tmp_path):
    assert isinstance(open_cache(postgres_url), PostgresCallCache)
    assert isinstance(open_cache(tmp_path / "cache.duckdb"), CallCache)


def test_same_answers_as_the_duckdb_cache(postgres_url, tmp_path):
    pg, duck = open_cache(postgres_url), open_cache(tmp_path / "cache.duckdb")
    for cache in (pg, duck):
        _fill(cache, 40)
    keys = [f"k{n:04d}" for n in range(0, 45, 3)]
    assert pg.get_many(keys) == duck.get_many(keys) and len(pg.get_many(keys)) == 14
    assert pg.get("k0001") == {"text": "answer 1 ✓", "tokens": 1, "endpoint": "http://10.0.0.1:8000/v1"}
    assert pg.get("k9999") is None and pg.get_many([]) == {}
    assert pg.count() == duck.count() == 40 and pg.count("score") == duck.count("score") == 10
    for model, kind in ((None, None), ("model-1", None), ("model-0", "chat"), ("absent", None)):
        assert pg.mean_seconds(model, kind) == pytest.approx(duck.mean_seconds(model, kind))
    per_endpoint, expected = pg.endpoint_seconds("model-1"), duck.endpoint_seconds("model-1")
    assert set(per_endpoint) == set(expected) == {"", "http://10.0.0.1:8000/v1"}
    for endpoint, (seconds, calls) in expected.items():
        assert per_endpoint[endpoint] == (pytest.approx(seconds), calls)
    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] == 1  # one pooled connection served every operation above
    connection.close()
    # Two writers of one key (two machines that computed the same call): the first one's row stays, whole.
    pg.put("k0001", "chat", "model-1", {}, {"text": "a second writer of the same key"}, 9.0)
    assert pg.get("k0001")["text"] == "answer 1 ✓" and pg.count() == 40


def test_a_read_only_cache_on_an_empty_database_reads_empty(postgres_url):
    cache = PostgresCallCache(postgres_url, read_only=True)
    assert cache.get_many(["a"]) == {} and cache.count() == 0 and cache.mean_seconds() is None
    with pytest.raises(RuntimeError, match="read-only"):
        cache.put("a", "chat", "m", {}, {}, 0.0)


def test_the_135m_model_writes_to_postgres_and_a_rerun_is_served_from_it(postgres_url, tmp_path):
    def llm() -> LlamaCppLLM:
        return LlamaCppLLM(cache_path=postgres_url, model="smollm2-135m", model_cache_dir=str(tmp_path), n_ctx=512)

    first = llm()
    answers = first.chat_many([_messages(q) for q in QUESTIONS], PARAMS)
    assert first.calls_made == 3 and first.cache.count("chat") == 3
    assert all(a.text.strip() and not a.cached for a in answers)

    rerun = llm()  # a new resource on the same database, as a run on another machine
    again = rerun.chat_many([_messages(q) for q in QUESTIONS], PARAMS)
    assert rerun.calls_made == 0 and rerun.cache_hits == 3
    assert [a.text for a in again] == [a.text for a in answers] and all(a.cached for a in again)

    # The same keys as the DuckDB file: the embedded backend with a DuckDB cache finds them after a copy.
    duck = tmp_path / "cache.duckdb"
    done = run_cli(["dsc", "cache", "copy", "--from", postgres_url, "--to", str(duck)], {})
    assert done.returncode == 0, done.stderr
    embedded = LlamaCppLLM(cache_path=str(duck), model="smollm2-135m", model_cache_dir=str(tmp_path), n_ctx=512)
    assert [a.text for a in embedded.chat_many([_messages(q) for q in QUESTIONS], PARAMS)] == [a.text for a in answers]
    assert embedded.calls_made == 0


def _all_rows(cache) -> list[tuple]:
    rows = [tuple(row) for batch in cache.rows(batch=7) for row in batch]
    return [(k, kind, m, json.loads(req), json.loads(resp), s, t) for k, kind, m, req, resp, s, t in rows]


def test_copy_roundtrip_keeps_every_row_and_a_second_copy_copies_nothing(postgres_url, tmp_path):
    source, back = tmp_path / "source.duckdb", tmp_path / "back.duckdb"
    _fill(CallCache(source), 30)
    first = run_cli(["dsc", "cache", "copy", "--from", str(source), "--to", postgres_url], {})
    assert first.returncode == 0, first.stderr
    assert "30 calls read" in first.stdout and "30 copied" in first.stdout
    second = run_cli(["dsc", "cache", "copy", "--from", str(source), "--to", postgres_url], {})
    assert "30 calls read" in second.stdout and " 0 copied" in second.stdout, second.stdout
    home = run_cli(["dsc", "cache", "copy", "--from", postgres_url, "--to", str(back)], {})
    assert home.returncode == 0, home.stderr
    original = _all_rows(CallCache(source, read_only=True))
    assert len(original) == 30
    assert _all_rows(PostgresCallCache(postgres_url)) == original  # created_at and seconds too
    assert _all_rows(CallCache(back, read_only=True)) == original


def test_copy_from_a_missing_file_is_a_usage_error(postgres_url, tmp_path):
    done = run_cli(["dsc", "cache", "copy", "--from", str(tmp_path / "none.duckdb"), "--to", postgres_url], {})
    assert done.returncode == 2 and "no such cache file" in done.stderr


def _hold_several_connections(cache: PostgresCallCache) -> None:
    with ThreadPoolExecutor(6) as threads:  # several threads at once: several connections left in the pool
        list(threads.map(lambda n: (time.sleep(0.2), cache.get_many([f"k{n:04d}"])), range(12)))
    assert len(pg_cache._pool(cache.url).idle) >= 2


def test_a_restarted_server_is_reconnected_to_and_a_stopped_one_is_a_clear_error(own_postgres_server):
    server = own_postgres_server
    url = server.create_database("dsc")
    cache = PostgresCallCache(url)
    _fill(cache, 5)
    _hold_several_connections(cache)
    server.stop()
    server.start()
    # Every pooled connection died with the old server: the first one tried is found dead, the others are dropped
    # with it, and the put goes through on a fresh connection.
    cache.put("after-restart", "chat", "m", {"q": 2}, {"text": "kept"}, 1.0)
    assert cache.get("after-restart") == {"text": "kept"} and cache.count() == 6

    _hold_several_connections(cache)
    server.stop()
    started = time.monotonic()
    with pytest.raises(CacheUnavailableError, match=rf"PostgreSQL server at {url} cannot be reached.*Re-execute"):
        cache.put("while-down", "chat", "m", {"q": 1}, {"text": "lost?"}, 1.0)
    assert time.monotonic() - started < 15  # a connection refused fails fast, not after a long timeout
    with pytest.raises(CacheUnavailableError):
        cache.get("k0001")
    server.start()
    cache.put("back", "chat", "m", {"q": 3}, {"text": "kept too"}, 1.0)
    assert cache.get("while-down") is None and cache.get("back") == {"text": "kept too"}
    assert cache.count() == 7 and cache.get("k0004") is not None


def test_a_crash_mid_transaction_leaves_no_row(own_postgres_server):
    """Rows go in one transaction: a crash (``pg_ctl -m immediate``) before the commit leaves none of them."""
    url = own_postgres_server.create_database("dsc")
    cache = PostgresCallCache(url)
    cache.put("before", "chat", "m", {}, {"text": "kept"}, 1.0)
    writer = psycopg2.connect(url)
    with writer.cursor() as cursor:  # an uncommitted insert in flight when the server dies
        cursor.execute("INSERT INTO calls VALUES ('half', 'chat', 'm', '{}', '{}', 0, 0)")
    own_postgres_server.stop("immediate")
    own_postgres_server.start()
    writer.close()
    assert cache.get("half") is None and cache.count() == 1


def test_dsc_run_stops_before_any_model_call_when_the_cache_server_is_down(own_postgres_server, tmp_path):
    url = own_postgres_server.create_database("dsc")
    own_postgres_server.stop()
    env = {"DSC_PROFILE": "test", "DSC_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}
    done = run_cli(
        ["dsc", "run", "--tasks", "sentiment", "--select", "raw_prompts,drafts"], {**env, "DSC_CACHE_URL": url}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"dsc run: call cache: the call cache's PostgreSQL server at {url} cannot be reached" in done.stderr
    assert "nothing was run" in done.stderr
