"""Batched decoding with the real SmolLM2-135M: reproducibility, resume after a kill, stops, batched scoring, and the
thread rule."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from dsc_assets_tests.conftest import PROJECT_ROOT
from resources.llm import LlamaCppLLM, SamplingParams
from resources.threads import THREADS_ENV, llama_threads, usable_cores

PARAMS = SamplingParams(temperature=0.9, max_tokens=24, seed=7)
QUESTIONS = [
    "Name a fruit.",
    "Write one sentence about the sea.",
    "What is 2 + 3?",
    "Say hello in French.",
    "Name a colour.",
    "Describe a cat in five words.",
    "What is the capital of Italy?",
]


def _messages(question: str) -> list[dict]:
    return [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": question}]


def _llm(tmp_path, name: str, batch_size: int = 4) -> LlamaCppLLM:
    return LlamaCppLLM(
        cache_path=str(tmp_path / f"{name}.duckdb"),
        model="smollm2-135m",
        model_cache_dir=str(tmp_path / "models"),
        n_ctx=512,
        batch_size=batch_size,
    )


def test_a_batch_gives_the_same_texts_from_a_fresh_cache(tmp_path):
    requests = [_messages(q) for q in QUESTIONS]
    first = _llm(tmp_path, "a").chat_many(requests, PARAMS)
    again = _llm(tmp_path, "b").chat_many(requests, PARAMS)  # another cache: everything is generated again
    assert [g.text for g in again] == [g.text for g in first]
    assert [g.completion_tokens for g in again] == [g.completion_tokens for g in first]
    assert not any(g.cached for g in first + again)
    assert all(g.text for g in first) and len({g.text for g in first}) == len(QUESTIONS)
    assert all(g.finish_reason in ("stop", "length") and 0 < g.completion_tokens <= PARAMS.max_tokens for g in first)
    assert any(g.finish_reason == "length" for g in first) and all(
        g.completion_tokens == PARAMS.max_tokens for g in first if g.finish_reason == "length"
    )


def test_a_batchs_recorded_seconds_are_shares_that_sum_to_its_wall_time(tmp_path):
    """Each answer records its part of the engine's time (what `dsc plan` multiplies by the calls it counts), not its
    latency: seven answers at four sequences at a time would otherwise count the batch's time up to four times."""
    llm = _llm(tmp_path, "shares")
    first = llm.chat_many([_messages(QUESTIONS[0])], PARAMS)[0]  # model loaded and engine built before the timing
    started = time.perf_counter()
    generations = llm.chat_many([_messages(q) for q in QUESTIONS[1:]], PARAMS)
    wall = time.perf_counter() - started
    total = sum(g.seconds for g in generations)
    assert 0.7 * wall < total <= wall, (total, wall)
    assert llm.cache.mean_seconds(llm.model_identity()) == pytest.approx((total + first.seconds) / len(QUESTIONS))


def test_batch_size_one_reproduces_create_chat_completion(tmp_path):
    """The engine at batch size 1 is today's single-sequence call token for token (same template, sampler, seed),
    which is why batch size 1 keeps the cache keys of earlier versions."""
    llm = _llm(tmp_path, "one", batch_size=1)
    llama = llm.llama()
    for question, params in [
        (QUESTIONS[1], PARAMS),
        (QUESTIONS[5], PARAMS.model_copy(update={"temperature": 0.0})),
        (QUESTIONS[3], PARAMS.model_copy(update={"stop": (" ",), "max_tokens": 40})),
    ]:
        llama.reset()
        out = llama.create_chat_completion(
            messages=_messages(question),
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_tokens=params.max_tokens,
            repeat_penalty=params.repeat_penalty,
            seed=params.seed,
            stop=list(params.stop) or None,
        )
        generation = llm.chat(_messages(question), params)
        assert generation.text == out["choices"][0]["message"]["content"].strip()
        assert generation.completion_tokens == out["usage"]["completion_tokens"]
        assert generation.finish_reason == out["choices"][0]["finish_reason"]
    assert llm.model_identity() == f"gguf:{llm.model_file().sha256}"
    assert _llm(tmp_path, "four").model_identity().endswith(":batch4")


def test_stop_strings_end_an_answer_inside_a_batch(tmp_path):
    params = PARAMS.model_copy(update={"stop": (" ",), "max_tokens": 40})
    generations = _llm(tmp_path, "stop").chat_many([_messages(q) for q in QUESTIONS], params)
    assert all(" " not in g.text for g in generations)
    assert any(g.finish_reason == "stop" for g in generations)


def test_a_run_killed_mid_batch_resumes_with_only_the_unfinished_rows(tmp_path):
    requests = [_messages(q) for q in QUESTIONS]
    killed = _llm(tmp_path, "resume")
    finished: list[int] = []

    def kill_after_three(index, generation):
        finished.append(index)
        if len(finished) == 3:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        killed.chat_many(requests, PARAMS, on_generated=kill_after_three)
    assert killed.cache.count() == 3, "the rows finished before the kill are committed, the ones in flight are not"

    resumed = _llm(tmp_path, "resume")  # a new run on the same cache
    assert resumed.count_missing(requests, PARAMS) == len(QUESTIONS) - 3
    generations = resumed.chat_many(requests, PARAMS)
    assert resumed.calls_made == len(QUESTIONS) - 3 and resumed.cache_hits == 3
    assert sorted(i for i, g in enumerate(generations) if g.cached) == sorted(finished)
    assert all(g.text for g in generations)


def test_the_same_request_twice_is_generated_once(tmp_path):
    llm = _llm(tmp_path, "dup")
    generations = llm.chat_many([_messages(QUESTIONS[0])] * 3, PARAMS)
    assert llm.calls_made == 1 and len({g.text for g in generations}) == 1


def _polite_judge(tmp_path, n_ctx: int, batch_size: int):
    """The reward resource with the 135M model as judge, and its judge asking whether a response is polite."""
    from dsc_assets.lib.task_spec import Scorer
    from resources.rewards import RewardModels

    models = RewardModels(
        cache_path=str(tmp_path / "scores.duckdb"),
        judge_model="smollm2-135m",
        model_cache_dir=str(tmp_path / "models"),
        n_ctx=n_ctx,
        batch_size=batch_size,
    )
    return models, models.for_task(Scorer(name="judge", options={"question": "Is the response polite?"}))


def test_batched_scores_equal_one_at_a_time_scores(tmp_path):
    """Batched judge verdicts and DLMA log-probs against the one-sequence-at-a-time functions. Not bit-identical: a
    row's position in a multi-sequence ubatch picks llama.cpp's matrix kernel (gemm tile or gemv leftover), and the
    135M Q4_1 model carries that rounding into the last digits; the old path itself moves P(Yes) by up to 0.02 between
    one prefill and token-by-token evaluation of the same prompt. Measured batched-vs-old: |dP| <= 0.031, |d log p|
    <= 0.024 (of sums around -10 to -80); the bounds below leave room for another CPU's kernels."""
    from resources.judge import _tokens, chatml, continuation_logprob, next_token_logprobs

    models, judge = _polite_judge(tmp_path, n_ctx=1024, batch_size=4)
    texts = [
        "Thank you for asking! Happy to help.",
        "Shut up, idiot.",
        "Sure, here it is.",
        "No.",
        "Maybe later, friend.",
        "Go away.",
    ]
    batched = judge.score(["Can you help me?"] * len(texts), texts)
    reference_llama = models._model(logits_all=True).llama()
    yes, no = judge.verdict_tokens(reference_llama)
    for text, score in zip(texts, batched):
        user = f"{judge.question}\n\nRequest: Can you help me?\n\nResponse: {text}\n\n{judge.question} Answer with Yes or No."
        logprobs = next_token_logprobs(
            reference_llama,
            _tokens(
                reference_llama,
                chatml([{"role": "system", "content": judge.SYSTEM}, {"role": "user", "content": user}]),
            ),
        )
        p_yes, p_no = np.exp(logprobs[yes]).sum(), np.exp(logprobs[no]).sum()
        assert score == pytest.approx(p_yes / (p_yes + p_no), abs=0.06)

    scorer = models.self_reward()
    triples = [
        ("You are kind.", "Say something.", "Hello there, friend!"),
        ("You are rude.", "Say something.", "Go away."),
        ("You are kind.", "Describe the sea.", "The sea is wide and blue, and it never sleeps."),
        ("You are rude.", "Describe the sea.", "Wet."),
    ] * 2
    values = scorer.logprobs(triples)
    assert scorer.computed == 4, "repeated triples are scored once"
    assert values[:4] == values[4:]
    for (system, query, answer), value in zip(triples, values):
        prefix = _tokens(
            reference_llama, chatml([{"role": "system", "content": system}, {"role": "user", "content": query}])
        )
        expected = continuation_logprob(reference_llama, prefix, _tokens(reference_llama, answer + "<|im_end|>"))
        assert value == pytest.approx(expected, abs=0.15)


def test_thread_rule_follows_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert usable_cores() == len(os.sched_getaffinity(0))
    assert llama_threads() == usable_cores()
    assert llama_threads(1) == 1
    assert llama_threads(10_000) == usable_cores(), "never more threads than cores"
    monkeypatch.setenv(THREADS_ENV, "1")
    assert llama_threads() == 1 and llama_threads(2) == min(2, usable_cores())
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ValueError, match="DSC_LLAMA_THREADS='many'"):
        llama_threads()


def test_thread_rule_and_wait_policy_in_a_fresh_process():
    """Pinned to one core, the rule gives one thread; importing the LLM resource sets OMP_WAIT_POLICY=PASSIVE before
    llama_cpp is loaded (and keeps a policy the user chose)."""
    code = (
        "import os, sys; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "import resources.llm, resources.rewards; from resources.threads import llama_threads; "
        "print(llama_threads(), os.environ['OMP_WAIT_POLICY'], 'llama_cpp' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", THREADS_ENV)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "PASSIVE", "False"]
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.split()[1] == "ACTIVE"


def test_contexts_of_one_thread_answer_side_by_side_as_one_context_with_all_cores_does(tmp_path):
    """The evaluation answers small models side by side, one 1-thread context per core: each answer is the one the
    all-cores context gives, and two contexts really decode at the same time (their generate calls overlap)."""
    import shutil
    import threading

    requests = [_messages(q) for q in QUESTIONS]
    packaged = _llm(tmp_path, "alone")
    alone = [g.text for g in packaged.chat_many(requests, PARAMS)]
    spans: dict[str, list[float]] = {}

    def answer(name: str) -> list[str]:  # two model files, as two checkpoints are: two contexts
        copy = shutil.copy(packaged.model_file().path, tmp_path / f"{name}.gguf")
        llm = _llm(tmp_path, name).with_model(str(copy)).with_threads(1)
        started = time.perf_counter()
        texts = [g.text for g in llm.chat_many(requests, PARAMS)]
        spans[name] = [started, time.perf_counter()]
        return texts

    results: dict[str, list[str]] = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, answer(n))) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["a"] == results["b"] == alone
    if usable_cores() >= 2:
        (a0, a1), (b0, b1) = spans["a"], spans["b"]
        assert min(a1, b1) - max(a0, b0) > 0.5 * min(a1 - a0, b1 - b0), "1-thread contexts took turns"


def test_the_decode_budget_admits_contexts_while_their_cores_are_free():
    """Two 1-core holders of a 2-core budget run at once; an all-cores holder waits until both are done; a holder
    takes its cores again at no cost (nested sections)."""
    import threading

    from resources.batched import DecodeBudget

    budget, events, both_in = DecodeBudget(total=2), [], threading.Barrier(2, timeout=10)

    def one_core(name: str) -> None:
        with budget.cores(1):
            with budget:  # nested: already holds, takes nothing more
                events.append(f"{name} in")
                both_in.wait()  # fails with BrokenBarrierError if the two could not hold at once
                time.sleep(0.2)
                events.append(f"{name} out")

    def all_cores() -> None:
        time.sleep(0.05)
        with budget:
            events.append("all in")

    workers = [threading.Thread(target=one_core, args=(n,)) for n in "ab"] + [threading.Thread(target=all_cores)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=20)
    assert sorted(events[:2]) == ["a in", "b in"] and events[-1] == "all in" and len(events) == 5


def test_shared_runs_cut_sorted_sequences_where_a_common_start_saves_the_most_prefill():
    from resources.shared_prefill import MIN_SHARED_TOKENS, shared_runs

    instructions = list(range(100, 100 + 20))  # what every judge prompt starts with
    request_a, request_b = instructions + [1] * 30, instructions + [2] * 30
    wave = [request_a + [7, 8], request_a + [9, 9, 9], request_b + [5], request_b + [6], request_b + [7]]
    limits = [len(t) - 1 for t in wave]
    # two runs of one request each (50 shared tokens: 1 x 50 + 2 x 50 saved) beat one run of the instructions
    # (4 x 20 saved)
    assert shared_runs(wave, limits) == [(0, 2, 50), (2, 5, 50)]
    # a wanted position inside the common start caps what its run may share: logits come from a row's own tokens
    assert shared_runs(wave, [10] + limits[1:]) == [(0, 2, 10), (2, 5, 50)]
    # too short a common start is not shared, nor is a run of one
    short = [[1] * (MIN_SHARED_TOKENS - 1) + [2], [1] * (MIN_SHARED_TOKENS - 1) + [3]]
    assert shared_runs(short, [7, 7]) == [(0, 1, 0), (1, 2, 0)]
    assert shared_runs([request_a], [49]) == [(0, 1, 0)]


def test_shared_prefix_scoring_gives_every_wanted_row_once_from_less_prefill(tmp_path):
    """The engine's scoring with ``share_prefixes`` against without, on the real 135M model: the same (sequence,
    position) rows, logits equal to rounding (a copied KV row was computed in another ubatch), and fewer tokens
    prefilled: the shared starts once per run of a wave."""
    from resources.batched import batch_engine
    from resources.decode_budget import DECODE_LOCK
    from resources.llm import load_llama
    from resources.models import resolve_model
    from resources.shared_prefill import shared_runs

    llama = load_llama(resolve_model("smollm2-135m", str(tmp_path / "models")).path, 1024, 2, 512, False)
    start = llama.tokenize(b"You judge answers. Is the response polite? Request: Can you help me with my homework?")
    answers = ["Sure, happy to help.", "No.", "Do it yourself, lazy.", "Of course! Which subject?", "Maybe."]
    sequences = [start + llama.tokenize(f" Response: {a} Answer Yes or No.".encode(), add_bos=False) for a in answers]
    sequences += [llama.tokenize(b"Something else entirely, with no shared start at all.")]
    wanted = [range(len(t) - 3, len(t)) for t in sequences]
    results = {}
    with DECODE_LOCK:
        engine = batch_engine(llama, ("test", "score"), 4, 1024, 2, 512)
        for share in (False, True):
            rows: dict = {}
            fed = engine.prefilled
            engine.score(
                sequences, wanted, lambda i, p, logits, rows=rows: rows.setdefault((i, p), logits.copy()), share
            )
            results[share] = (rows, engine.prefilled - fed)
    (plain, plain_fed), (shared, shared_fed) = results[False], results[True]
    assert sorted(shared) == sorted(plain) == sorted((i, p) for i, w in enumerate(wanted) for p in w)
    for key, logits in plain.items():
        assert int(np.argmax(shared[key])) == int(np.argmax(logits))
        np.testing.assert_allclose(shared[key], logits, atol=0.05)
    assert plain_fed == sum(len(t) for t in sequences)
    order = sorted(range(len(sequences)), key=lambda i: sequences[i])
    expected_saved = 0
    for begin in range(0, len(order), 4):
        wave = [sequences[i] for i in order[begin : begin + 4]]
        runs = shared_runs(wave, [min(len(t) - 1, wanted[i].start) for i, t in zip(order[begin : begin + 4], wave)])
        expected_saved += sum((last - first - 1) * shared for first, last, shared in runs)
    assert expected_saved >= 3 * len(start) - 3, "the five answers share the request in two waves"
    assert shared_fed == plain_fed - expected_saved


def test_judge_scores_are_committed_one_by_one_with_progress_lines(tmp_path, monkeypatch):
    """A judge commits each verdict as it is read (a run killed mid-scoring keeps every finished score), and the
    progress lines the run log shows count them."""
    import resources.scorer as scorer_module
    from resources.hashing import call_key

    _, judge = _polite_judge(tmp_path, n_ctx=512, batch_size=2)
    texts = ["Thank you!", "Go away.", "Sure.", "No.", "Happy to help."]
    keys = [call_key("score", judge.identity(), "Help?", t) for t in texts]
    committed, lines = [], []

    def log(line: str) -> None:
        lines.append(line)
        committed.append(len(judge.cache.get_many(keys)))

    monkeypatch.setattr(scorer_module, "PROGRESS_EVERY_S", 0.0)
    token = scorer_module.SCORE_PROGRESS.set(log)
    try:
        scores = judge.score(["Help?"] * len(texts), texts)
    finally:
        scorer_module.SCORE_PROGRESS.reset(token)
    assert committed == [1, 2, 3, 4, 5]
    # each score records its time (the time since the one before), so `dsc plan` learns the judge's rate
    assert judge.cache.mean_seconds(judge.identity(), "score") > 0
    assert lines[-1].startswith("judge: 5/5 scored")
    assert all(0.0 <= s <= 1.0 for s in scores) and judge.computed == 5
    assert judge.score(["Help?"] * 2, texts[:2]) == scores[:2] and judge.computed == 5
