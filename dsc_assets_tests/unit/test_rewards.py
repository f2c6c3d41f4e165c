"""Reward scorers on hand-written texts with a known ordering, with the real models (SmolLM2 for judge/DLMA)."""

from __future__ import annotations

import numpy as np
import pytest

from dsc_assets.lib.task_spec import Scorer
from resources.judge import _tokens, chatml, continuation_logprob, next_token_logprobs
from resources.rewards import PiiScorer, RewardModels, VaderScorer

GLOWING = "A triumph. Gorgeous photography, a moving story and wonderful performances; I loved every minute."
SCATHING = "A dreadful, boring mess. The acting is awful, the plot is stupid and I hated every minute of it."
PERSONAL = "John Smith of Dayton can be reached at 937-555-0142 or john.smith@example.com."
CLEAN = "A local resident said the new library will open next spring."


@pytest.fixture
def models(tmp_path) -> RewardModels:
    return RewardModels(
        cache_path=str(tmp_path / "cache.duckdb"),
        judge_model="smollm2-135m",
        model_cache_dir=str(tmp_path / "models"),
        n_ctx=1024,
    )


def test_vader_orders_glowing_above_scathing(tmp_path):
    scorer = VaderScorer(str(tmp_path / "c.duckdb"))
    glowing, scathing = scorer.score(["review", "review"], [GLOWING, SCATHING])
    assert -1 <= scathing < 0 < glowing <= 1


def test_pii_counts_personal_data_and_caches(tmp_path):
    scorer = PiiScorer(str(tmp_path / "c.duckdb"))
    personal, clean = scorer.score(["news", "news"], [PERSONAL, CLEAN])
    assert clean == 0.0 and personal <= -3
    kinds = {kind for kind, _ in scorer.entities_found(PERSONAL)}
    assert {"PERSON", "PHONE_NUMBER", "EMAIL_ADDRESS"} <= kinds
    assert scorer.computed == 2
    assert scorer.score(["news", "news"], [PERSONAL, CLEAN]) == [personal, clean]
    assert scorer.computed == 2 and scorer.cached == 2
    # The story's town is what the news reports, not personal data; a home address is.
    place, home, road = scorer.score(
        ["news"] * 3,
        [
            "A kitchen fire broke out on Thursday night in Dayton, Ohio; no one was hurt.",
            "A kitchen fire broke out at 14 Elm Street in Dayton, Ohio; no one was hurt.",
            "Traffic on Main Street was closed for an hour after the crash near 2200 N. Oak Ave.",
        ],
    )
    assert place == 0.0 and home == -1.0 and road == -1.0
    assert [kind for kind, _ in scorer.entities_found("Margaret Ellison, 52, of 14 Elm Street")] == [
        "PERSON",
        "STREET_ADDRESS",
    ]


def test_continuation_logprob_matches_token_by_token_and_ranks_continuations(models):
    llama = models._model(logits_all=True).llama()
    prefix = _tokens(llama, chatml([{"role": "user", "content": "What is the capital of France?"}]))
    likely, unlikely = (
        _tokens(llama, "The capital of France is Paris."),
        _tokens(llama, "Bananas sing purple tax forms."),
    )
    batched = continuation_logprob(llama, prefix, likely)
    stepwise = sum(next_token_logprobs(llama, prefix + likely[:i])[likely[i]] for i in range(len(likely)))
    assert batched < 0 and batched == pytest.approx(stepwise, abs=1e-2)
    assert batched > continuation_logprob(llama, prefix, unlikely)


def test_judge_scores_are_probabilities_and_deterministic(models):
    judge = models.for_task(Scorer(name="judge", options={"question": "Is the response polite?"}))
    texts = ["Thank you for asking! Happy to help.", "Shut up, idiot, figure it out yourself."]
    first = judge.score(["Can you help me?"] * 2, texts)
    assert all(0.0 <= s <= 1.0 for s in first)
    fresh = RewardModels(
        cache_path=models.cache_path + ".other",
        judge_model="smollm2-135m",
        model_cache_dir=models.model_cache_dir,
        n_ctx=1024,
    )
    again = fresh.for_task(Scorer(name="judge", options={"question": "Is the response polite?"})).score(
        ["Can you help me?"] * 2, texts
    )
    assert again == pytest.approx(first, abs=1e-6)
    inverted = models.for_task(Scorer(name="judge", options={"question": "Is the response polite?", "invert": True}))
    assert inverted.score(["Can you help me?"] * 2, texts) == pytest.approx([1 - s for s in first], abs=1e-6)


def test_dlma_self_reward_sign_and_antisymmetry(models):
    scorer = models.self_reward()
    query = "Reply with one word."
    positive, negative = "You always reply with the single word: Yes.", "You always reply with the single word: No."
    reward = scorer.self_reward(query, positive, negative, "Yes", "No")
    assert reward > 0
    assert scorer.self_reward(query, positive, negative, "No", "Yes") == pytest.approx(-reward)
    assert scorer.self_reward_many([query], positive, negative, ["Yes"], ["No"]) == [pytest.approx(reward)]


def test_unknown_scorer_and_judge_without_question_are_clear_errors(models):
    # rejected where the task file is read, before any model is loaded (see test_preflight for the file-level message)
    with pytest.raises(
        ValueError,
        match=r"unknown scorer 'bleu' \(known: vader, pii, judge, textblob, afinn, pii_rules, safety_rules, sycophancy_rules, roleplay_rules\)",
    ):
        models.for_task(Scorer(name="bleu"))
    with pytest.raises(ValueError, match="scorer 'judge': option 'question' is missing"):
        models.for_task(Scorer(name="judge"))
    assert np.isinf(models.for_task(Scorer(name="pii")).score_range()[0])
