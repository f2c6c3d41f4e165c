"""The evaluation's second reward (task.yaml ``second_scorer``) never selects data: adding, changing or removing it
moves the evaluation's version alone (every other asset's code version, input versions and the chain's cache keys
stay), and the evaluation table carries it beside the first reward with the two rewards' rank correlation."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from dsc_assets.lib.stats import bootstrap_ci
from dsc_assets_tests.graph.test_identity import _diff, _test_definitions, identity

TASKS = ("sentiment", "privacy", "safety", "roleplay", "sycophancy")
BLOCK = re.compile(r"^second_scorer:\n(?:  .*\n)*", re.MULTILINE)
OTHER_SECOND = {  # another second reward per task than the shipped one
    "sentiment": "second_scorer:\n  name: afinn\n",
    "privacy": "second_scorer:\n  name: pii_rules\n  options:\n    kinds: [name, email]\n",
    "safety": "second_scorer:\n  name: judge\n  options:\n    question: Is it safe?\n    model: smollm2-135m\n",
    "roleplay": "second_scorer:\n  name: safety_rules\n",
    "sycophancy": "second_scorer:\n  name: judge\n  options:\n    question: Is it objective?\n    model: smollm2-135m\n",
}


def _edit(prompts, replace) -> None:
    for task in TASKS:
        path = prompts / task / "task.yaml"
        text = path.read_text()
        assert BLOCK.search(text), f"{task}: the shipped task.yaml has no second_scorer block"
        path.write_text(BLOCK.sub(replace(task), text, count=1))


def _moved(before: dict, after: dict) -> dict[str, set[str]]:
    """task -> the assets whose identity differs (asset specs and call keys count as '<graph>')."""
    moved: dict[str, set[str]] = {}
    for line in _diff(before, after):
        parts = line.split(":")[0].split("/")
        task, asset = (parts[2], parts[3]) if parts[1] == "versions" else ("*", "<graph>")
        moved.setdefault(task, set()).add(asset)
    return moved


def test_second_scorer_moves_the_evaluations_version_and_nothing_upstream(dsc_home, prompts_copy):
    defs = _test_definitions(dsc_home)
    shipped = identity(defs)
    _edit(prompts_copy, lambda task: OTHER_SECOND[task])
    changed = identity(defs)
    _edit(prompts_copy, lambda task: "")
    removed = identity(defs)
    for after in (changed, removed):
        assert _moved(shipped, after) == {task: {"evaluation"} for task in TASKS}
    for task in TASKS:  # a task without one reads as before the field existed: no second_ input at all
        inputs = removed["versions"][task]["evaluation"]["inputs"]
        assert not {"task.second_scorer", "second_scorer_model"} & set(inputs), task
        assert {"task.second_scorer", "second_scorer_model"} <= set(shipped["versions"][task]["evaluation"]["inputs"])
    readers = {s for s, v in shipped["versions"]["sentiment"].items() if {"task.second_scorer"} & set(v["reads"])}
    assert readers == {"evaluation"}


def _sentiment_table(tmp_path, second: bool):
    from dsc_assets.defs.evaluation.assets import _table
    from dsc_assets.lib.tasks import load_task
    from resources.rewards import RewardModels

    task = load_task("sentiment")
    if not second:
        task.spec = task.spec.model_copy(update={"second_scorer": None})
    prompts = [f"Review film {i}." for i in range(6)]
    test = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(6)], "prompt": prompts})
    answers = {  # sample-major blocks of the 6 prompts; sft trained at two seeds (seed-major)
        "base": ["A film.", "It was bad.", "Dull.", "A dreadful mess.", "Okay.", "Boring and long."],
        "placebo": ["A good film.", "It was fine.", "Dull.", "A mess.", "Nice enough.", "Long."],
        "sft": ["A wonderful film!", "Great acting, loved it.", "Superb.", "A charming delight.", "Good.", "Fun."]
        + ["Lovely.", "It was great.", "Brilliant and moving.", "Pleasant.", "An excellent cast.", "Happy."],
    }
    rewards = RewardModels(cache_path=str(tmp_path / "cache.duckdb"))
    table, _, second_rewards = _table(
        task, test, answers, rewards, 1, {"sft": ["sft", "sft@seed1"]}, task.second_scorer_for()
    )
    return table.set_index("model"), answers, second_rewards


def test_the_evaluation_table_carries_the_second_reward_and_its_rank_correlation(tmp_path):
    from textblob.sentiments import PatternAnalyzer
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    table, answers, second = _sentiment_table(tmp_path, second=True)
    textblob = {m: np.array([PatternAnalyzer().analyze(t).polarity for t in texts]) for m, texts in answers.items()}
    vader = SentimentIntensityAnalyzer()
    sft_second = textblob["sft"].reshape(2, 6)  # (seeds, prompts): the same paired bootstrap over prompts and seeds
    assert table.loc["sft", "second_difference_vs_base"] == pytest.approx((sft_second - textblob["base"]).mean())
    low, high = bootstrap_ci(sft_second - textblob["base"], seed=0)
    assert (table.loc["sft", "second_ci95_low"], table.loc["sft", "second_ci95_high"]) == pytest.approx((low, high))
    assert table.loc["sft", "second_ci95_low"] > 0  # every sft answer is warmer than base's
    placebo = textblob["sft"][:6] - textblob["placebo"]  # RL-style contrast rows pair the first seed
    assert table.loc["sft vs placebo", "second_difference_vs_base"] == pytest.approx(placebo.mean())
    for model in ("base", "sft", "placebo"):
        first = [vader.polarity_scores(t)["compound"] for t in answers[model]]
        expected = spearmanr(first, textblob[model]).statistic
        assert table.loc[model, "rewards_spearman"] == pytest.approx(expected), model
    assert not np.isnan(table.loc["sft", "rewards_spearman"])
    assert np.asarray(second["sft"]).shape == (2, 6) and table.loc["base", "second_difference_vs_base"] == 0.0


def test_a_task_without_a_second_scorer_keeps_the_tables_columns(tmp_path):
    table, _, second = _sentiment_table(tmp_path, second=False)
    assert second is None
    assert list(table.reset_index().columns) == [
        "model",
        "prompts",
        "mean_reward",
        "difference_vs_base",
        "ci95_low",
        "ci95_high",
        "win_rate_vs_base",
        "p_value",
        "seeds",
        "seed_sd",
        "groups",
        "mean_answer_words",
    ]


def test_the_report_shows_the_second_reward_beside_the_holm_verdict(tmp_path):
    from dsc_assets.lib.family import Family
    from dsc_assets.lib.report import _evaluation_section

    table, _, _ = _sentiment_table(tmp_path, second=True)
    table = table.reset_index()
    family = Family(raw={("sentiment", "sft"): 0.002}, adjusted={("sentiment", "sft"): 0.01}, missing=[])
    text = "\n".join(_evaluation_section(table, "sentiment", family))
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells.index("after_holm") < cells.index("second_difference_vs_base") < cells.index("second_verdict")
    sft = next(line for line in text.splitlines() if line.startswith("| sft |"))
    assert "better after Holm" in sft and "higher, excludes 0" in sft
    assert "\n\nThe `second_` columns are the second reward (`textblob`), which never selected data" in text


def test_dsc_plan_counts_a_score_of_the_second_reward_for_every_evaluated_answer(dsc_home):
    from dsc_assets.build.cost import run_cost
    from dsc_assets.defs.inputs import Environment
    from dsc_assets.lib.tasks import load_task

    resources = _test_definitions(dsc_home).resources
    task = load_task("sentiment")
    planned = run_cost(task, Environment(resources))["evaluation"]
    task.spec = task.spec.model_copy(update={"second_scorer": None})
    without = run_cost(task, Environment(resources))["evaluation"]
    assert planned.calls == without.calls > 0  # the same answers
    assert planned.scores - without.scores == planned.calls  # one more score each


def test_a_profiles_second_scorer_stands_in_for_the_tasks_and_moves_that_evaluation_alone(dsc_home):
    """The study profile grades safety with the 0.5B judge (teacher extra) in place of task.yaml's rule: the profile's
    ``second_scorers`` moves that task's evaluation version and nothing else, and preflight names a bad one."""
    from dsc_assets.build.preflight import task_model_problems
    from dsc_assets.definitions import build_definitions
    from dsc_assets.lib.profiles import load_profile
    from dsc_assets.lib.task_spec import Scorer
    from dsc_assets.lib.tasks import load_task

    profile = load_profile("test")
    shipped = identity(build_definitions(profile, dsc_home))
    judge = Scorer(name="judge", options={"question": "Is it safe?", "model": "smollm2-135m"})
    overridden = profile.model_copy(update={"second_scorers": {"safety": judge}})
    changed = identity(build_definitions(overridden, dsc_home))
    assert _moved(shipped, changed) == {"safety": {"evaluation"}}
    moved = shipped["versions"]["safety"]["evaluation"]["inputs"], changed["versions"]["safety"]["evaluation"]["inputs"]
    assert {k for k in moved[0] if moved[0][k] != moved[1][k]} == {"task.second_scorer", "second_scorer_model"}
    safety = load_task("safety")
    assert safety.second_scorer_for({"safety": judge.model_dump_json()}) == judge
    assert safety.second_scorer_for({}) == safety.spec.second_scorer
    problems = task_model_problems([safety], dsc_home, {"safety": safety.spec.scorer}, "profiles/x.yaml")
    assert problems == [
        "profiles/x.yaml: field 'second_scorers.safety' is the task's first reward: a second reward must be another "
        "scorer or model"
    ]
    missing = Scorer(name="judge", options={"question": "Safe?", "model": str(dsc_home / "nowhere.gguf")})
    problems = task_model_problems([safety], dsc_home, {"safety": missing}, "profiles/x.yaml")
    assert len(problems) == 1 and problems[0].startswith("profiles/x.yaml: field 'second_scorers.safety.options.model'")
