"""Generation over a pool of two real ``python -m llama_cpp.server`` processes with the 135M model (one thread each,
on free ports of 127.0.0.1): requests spread over both, a server killed with ``kill -9`` mid-batch, a server
that comes back mid-batch, both killed.

llama-cpp-python's server is deterministic for a seeded request whatever it answered before (measured: 6 requests
in three orders, greedy and at temperature 0.8, gave the same texts), so the pool's answers are compared with one
server's text for text.
"""

from __future__ import annotations

import importlib.util
import logging
from types import SimpleNamespace

import duckdb
import pytest

from dsc_assets.build.cost import Replay
from dsc_assets.defs.inputs import Environment
from dsc_assets.lib.profiles import GeneratorProfile, Profile, build_generator
from dsc_assets.lib.tasks import load_task
from resources.hashing import call_key
from resources.llama_server import start_servers
from resources.llm import GenerationError, SamplingParams
from resources.openai_llm import Endpoint, OpenAICompatibleLLM
from resources.stores import close_all

SERVER_MODULES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
PARAMS = SamplingParams(temperature=0.8, max_tokens=16, seed=5)
SYSTEM = {"role": "system", "content": "You are helpful."}
QUESTIONS = [
    "Name a colour.",
    "Name a fruit.",
    "Name a city.",
    "Name an animal.",
    "Name a planet.",
    "Name a tree.",
    "Name a river.",
    "Name a metal.",
    "Name a bird.",
    "Name a sport.",
    "Name a flower.",
    "Name a tool.",
]
REQUESTS = [[SYSTEM, {"role": "user", "content": q}] for q in QUESTIONS]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two servers; a test that kills one starts it again (same port) before the next test."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama-cpp-python's server extra is missing in this venv: {', '.join(missing)}")
    folder = tmp_path_factory.mktemp("servers")
    pair = start_servers(2, model_cache_dir=folder / "models", n_threads=1, n_ctx=512, log_path=folder / "log.txt")
    yield pair
    for server in pair:
        server.stop()


@pytest.fixture
def live(servers):
    for server in servers:
        server.start()
    for server in servers:
        server.wait_ready()
    return servers


@pytest.fixture(scope="module")
def one_server_texts(servers):
    """What server A alone answers, one request at a time, from an empty cache."""
    folder = servers[0].log_path.parent
    alone = OpenAICompatibleLLM(cache_path=str(folder / "alone.duckdb"), base_url=servers[0].base_url, model="smollm2")
    return [g.text for g in alone.chat_many(REQUESTS, PARAMS)]


def _pool(servers, tmp_path, **overrides) -> OpenAICompatibleLLM:
    settings = dict(
        cache_path=str(tmp_path / "cache.duckdb"),
        endpoints=[Endpoint(url=s.base_url, max_concurrency=2) for s in servers],
        model="smollm2",
        timeout_s=60,
        max_retries=1,
        backoff_s=0.1,
    )
    return OpenAICompatibleLLM(**{**settings, **overrides})


def _cache_rows(path) -> tuple[int, int, set[str]]:
    """Rows, distinct keys and models of the call cache table (read after the cache has let go of the file)."""
    close_all()
    with duckdb.connect(str(path), read_only=True) as con:
        rows, keys = con.execute("SELECT count(*), count(DISTINCT key) FROM calls").fetchone()
        models = {m for (m,) in con.execute("SELECT DISTINCT model FROM calls").fetchall()}
    return rows, keys, models


def _kill_at(server, answer: int, seen: list[int]):
    """``on_generated``: note each answer's row; ``kill -9`` the server once ``answer`` answers have arrived."""

    def on_generated(index, generation) -> None:
        seen.append(index)
        if len(seen) == answer:
            server.kill()

    return on_generated


def test_a_batch_is_spread_over_both_servers_and_answers_as_one_server_does(live, one_server_texts, tmp_path):
    pool = _pool(live, tmp_path)
    generations = pool.chat_many(REQUESTS, PARAMS)
    report = pool.endpoint_report()
    assert all(e["answers"] > 0 for e in report), f"both endpoints answer part of the batch: {report}"
    assert sum(e["answers"] for e in report) == len(REQUESTS) and pool.calls_made == len(REQUESTS)
    assert [g.text for g in generations] == one_server_texts, "same texts as one server, each at its own row"
    assert {g.endpoint for g in generations} == {s.base_url for s in live}

    keys = [call_key("chat", "openai-pool:smollm2:", r, PARAMS) for r in REQUESTS]
    assert [g.key for g in generations] == keys, "the key names the model, not the server that answered"
    assert _cache_rows(tmp_path / "cache.duckdb") == (len(REQUESTS), len(REQUESTS), {"openai-pool:smollm2:"})

    # Another pool of the same model, B alone: every answer is already cached, whichever server gave it.
    replica = _pool(live[1:], tmp_path)
    assert [g.text for g in replica.chat_many(REQUESTS, PARAMS)] == one_server_texts and replica.calls_made == 0

    # dsc plan's rate for the pool: the endpoints' measured rates add up.
    measured = pool.cache.endpoint_seconds(pool.model_identity())
    assert set(measured) == {s.base_url for s in live} and all(seconds > 0 for seconds, _ in measured.values())
    rate = sum(1 / seconds for seconds, _ in measured.values())
    assert pool.seconds_per_call(pool.cache) == pytest.approx(1 / rate)
    assert pool.seconds_per_call(pool.cache) < min(seconds for seconds, _ in measured.values())
    env = Environment(SimpleNamespace(llm=pool, settings=SimpleNamespace(max_tokens_cap=PARAMS.max_tokens)))
    replay = Replay(load_task("sentiment"), env)
    assert replay.rate(pool.model_identity()) == pytest.approx(1 / rate), "the rate the plan multiplies calls by"


def test_a_server_killed_mid_batch_leaves_the_batch_to_the_other(live, one_server_texts, tmp_path, caplog):
    cached_before = 4
    _pool(live, tmp_path).chat_many(REQUESTS[:cached_before], PARAMS)

    pool, seen = _pool(live, tmp_path), []
    with caplog.at_level(logging.WARNING):
        generations = pool.chat_many(REQUESTS, PARAMS, on_generated=_kill_at(live[0], 3, seen))
    a, b = pool.endpoint_report()
    assert not live[0].running() and not a["live"] and b["live"]
    assert a["failed_attempts"] >= 1, f"requests were in flight on the killed server and went to the other: {a}"
    assert any(live[0].base_url in r.getMessage() and "out of the pool" in r.getMessage() for r in caplog.records)

    assert pool.calls_made == len(REQUESTS) - cached_before, "calls made = rows not cached before"
    assert sorted(seen) == list(range(cached_before, len(REQUESTS))), "each missing row answered once"
    assert a["answers"] + b["answers"] == len(REQUESTS) - cached_before
    assert [g.text for g in generations] == one_server_texts, "no answer lost or changed"
    rows, keys, _ = _cache_rows(tmp_path / "cache.duckdb")
    assert rows == keys == len(REQUESTS), "every row cached once"


def test_both_servers_killed_fail_clearly_and_keep_what_arrived(live, one_server_texts, tmp_path):
    pool, seen = _pool(live, tmp_path), []
    kill_a, kill_b = _kill_at(live[0], 3, seen), _kill_at(live[1], 6, [])

    def on_generated(index, generation) -> None:
        kill_a(index, generation)
        kill_b(index, generation)

    with pytest.raises(GenerationError, match="no generation endpoint is left of 2") as failure:
        pool.chat_many(REQUESTS, PARAMS, on_generated=on_generated)
    message = str(failure.value)
    assert live[0].base_url in message and live[1].base_url in message, message
    assert f"{len(seen)} answers of this batch are cached" in message
    assert len(seen) >= 6 and pool.calls_made == len(seen)
    rows, keys, _ = _cache_rows(tmp_path / "cache.duckdb")
    assert rows == keys == len(seen), "every answer received before the end is in the cache"

    live[1].start().wait_ready()  # B is back at its URL; the same client asks the out endpoints before a batch
    generations = pool.chat_many(REQUESTS, PARAMS)
    assert pool.calls_made == len(REQUESTS), "the rerun made only the missing calls"
    assert [e["live"] for e in pool.endpoint_report()] == [False, True]
    assert [g.text for g in generations] == one_server_texts
    assert _cache_rows(tmp_path / "cache.duckdb")[:2] == (len(REQUESTS), len(REQUESTS))


def test_a_server_back_during_a_batch_rejoins_the_pool(live, one_server_texts, tmp_path, caplog):
    pool, seen = _pool(live, tmp_path, reprobe_s=0.2), []

    def on_generated(index, generation) -> None:
        seen.append(index)
        if len(seen) == 1:  # A dies and comes back at once, while B goes on with the batch
            live[0].kill()
            live[0].start().wait_ready()

    with caplog.at_level(logging.WARNING):
        generations = pool.chat_many(REQUESTS, PARAMS, on_generated=on_generated)
    a, b = pool.endpoint_report()
    messages = [r.getMessage() for r in caplog.records if live[0].base_url in r.getMessage()]
    assert any("out of the pool" in m for m in messages) and any("back in the pool" in m for m in messages), messages
    assert a["live"] and a["answers"] >= 2, f"A answered again after its probe: {a}"
    assert pool.calls_made == len(REQUESTS) and sorted(seen) == list(range(len(REQUESTS)))
    assert [g.text for g in generations] == one_server_texts


def test_pool_identity_names_no_url_and_a_single_server_keeps_its_key():
    single = OpenAICompatibleLLM(base_url="http://10.0.0.1:8000/v1/", model="m", model_revision="r")
    assert single.model_identity() == "openai:http://10.0.0.1:8000/v1:m:r", "the key existing caches were written with"
    urls = ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
    pools = [
        OpenAICompatibleLLM(endpoints=[Endpoint(url=u) for u in chosen], model="m", model_revision="r")
        for chosen in (urls, urls[::-1], urls[:1])
    ]
    assert {p.model_identity() for p in pools} == {"openai-pool:m:r"}
    kept = OpenAICompatibleLLM(
        endpoints=[Endpoint(url=u) for u in urls], identity_base_url=urls[0] + "/", model="m", model_revision="r"
    )
    assert kept.model_identity() == single.model_identity(), "a pool grown from one server can keep its keys"


def test_a_profile_declares_a_pool(tmp_path):
    endpoints = [{"url": "http://10.0.0.1:8000/v1", "max_concurrency": 8}, {"url": "http://10.0.0.2:8000/v1"}]
    generator = GeneratorProfile(backend="openai", model="m", endpoints=endpoints, max_concurrency=2)
    llm = build_generator(Profile(generator=generator), tmp_path)
    assert isinstance(llm, OpenAICompatibleLLM) and llm.model_identity() == "openai-pool:m:"
    assert [(e["url"], e["concurrency"]) for e in _states(llm)] == [(endpoints[0]["url"], 8), (endpoints[1]["url"], 2)]
    both = GeneratorProfile(backend="openai", model="m", endpoints=endpoints, base_url="http://10.0.0.1:8000/v1")
    with pytest.raises(ValueError, match="not both"):
        build_generator(Profile(generator=both), tmp_path)


def _states(llm: OpenAICompatibleLLM) -> list[dict]:
    return [{"url": e.url, "concurrency": e.concurrency} for e in llm._state().endpoints]
