"""ALMoST: comparison rules and filter (hand-made rows), reward model and RL step (real 135M student), the branch
materialized end to end with best-of-N, and exact staleness after a demonstration is edited."""

from __future__ import annotations

import pandas as pd

from dsc_assets.lib.almost import RULE_PAIRS, config_messages, heldout_prompts, synthesize_comparisons
from dsc_assets.lib.task_spec import Almost, Demonstration
from dsc_assets.lib.tasks import load_task

ALMOST = Almost(demonstrations=[Demonstration(prompt="p", response="r")])


def _responses(texts: dict[str, str], prompt_id: str = "p1", truncated: tuple[str, ...] = ()) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "task": "t",
                "prompt_id": prompt_id,
                "prompt": "Review Up.",
                "config": c,
                "model_role": "x",
                "text": t,
                "finish_reason": "length" if c in truncated else "stop",
                "completion_tokens": 1,
            }
            for c, t in texts.items()
        ]
    )


def test_rules_give_exactly_the_expected_pairs():
    df = synthesize_comparisons(_responses({c: f"answer {c} " * 5 for c in "ABCD"}), ALMOST, seed=0)
    pairs = {(r.rule, r.chosen_config, r.rejected_config) for r in df.itertuples()}
    assert pairs == {
        ("prompt", "A", "B"),
        ("prompt", "C", "D"),
        ("size", "A", "C"),
        ("size", "B", "D"),
        ("both", "A", "D"),
    }
    assert not any({r.chosen_config, r.rejected_config} == {"B", "C"} for r in df.itertuples())  # the rules disagree
    assert df["kept"].all()
    only_prompt = synthesize_comparisons(
        _responses({c: f"answer {c} " * 5 for c in "ABCD"}), ALMOST.model_copy(update={"rules": ["prompt"]}), seed=0
    )
    assert set(only_prompt["rule"]) == {"prompt"} and len(only_prompt) == len(RULE_PAIRS["prompt"])


def test_filter_drops_empty_identical_truncated_and_short_winners():
    long = "a thoughtful review with several specific details about acting, pacing and the score " * 2
    texts = {"A": long, "B": long, "C": "", "D": "ok"}
    df = synthesize_comparisons(_responses(texts), ALMOST, seed=0).set_index(["chosen_config", "rejected_config"])
    assert df.loc[("A", "B"), "drop_reason"] == "identical"
    assert df.loc[("C", "D"), "drop_reason"] == "empty"
    assert df.loc[("A", "D"), "drop_reason"] == ""  # longer chosen: kept
    # a "better" answer far shorter than its prompt's answers (under mean - std/2 words) is dropped...
    short = synthesize_comparisons(_responses({"A": "no", "B": long, "C": long + " x", "D": long + " y z"}), ALMOST, 0)
    assert set(short.loc[short["chosen_config"] == "A", "drop_reason"]) == {"length"}
    # ...but a slightly shorter one above that bar is kept (A: 26 words, B: 27; the prompt's mean 14.25, std 11.8)
    near = synthesize_comparisons(
        _responses({"A": long, "B": long + " more", "C": "a short answer", "D": "ok"}), ALMOST, 0
    )
    assert near.set_index(["chosen_config", "rejected_config"]).loc[("A", "B"), "kept"]
    cut = synthesize_comparisons(_responses({c: f"text {c} " * 9 for c in "ABCD"}, truncated=("B",)), ALMOST, 0)
    assert set(cut.loc[(cut["chosen_config"] == "B") | (cut["rejected_config"] == "B"), "drop_reason"]) == {"truncated"}
    kept_cut = synthesize_comparisons(
        _responses({c: f"text {c} " * 9 for c in "ABCD"}, truncated=("B",)),
        ALMOST.model_copy(update={"drop_truncated": False}),
        0,
    )
    assert kept_cut["kept"].all()


def test_heldout_fold_is_prompt_disjoint_and_stable():
    ids = [f"p{i}" for i in range(40)]
    heldout = heldout_prompts(ids, ALMOST, seed=0)
    assert 0 < len(heldout) < len(ids) and heldout == heldout_prompts(ids[::-1], ALMOST, seed=0)
    assert heldout_prompts(ids + ["new"], ALMOST, 0) - {"new"} == heldout  # adding a prompt moves no old one
    frames = pd.concat([_responses({c: f"answer {c} " * 5 for c in "ABCD"}, prompt_id=i) for i in ids])
    folds = synthesize_comparisons(frames, ALMOST, seed=0).groupby("prompt_id")["fold"].nunique()
    assert (folds == 1).all()  # all comparisons of a prompt sit in one fold
    assert len(heldout_prompts(["a", "b"], ALMOST, 0)) == 1  # tiny tasks still get both folds


def test_prompted_configurations_carry_affix_and_demonstrations():
    task = load_task("sentiment")
    plain, prompted = config_messages(task, "B", "Review Up."), config_messages(task, "A", "Review Up.")
    assert plain == [{"role": "system", "content": task.spec.system_prompt}, {"role": "user", "content": "Review Up."}]
    assert task.spec.contrastive.positive_affix in prompted[0]["content"]
    assert len(prompted) == 2 + 2 * len(task.spec.almost.demonstrations)
    assert prompted[2] == {"role": "assistant", "content": task.spec.almost.demonstrations[0].response}
