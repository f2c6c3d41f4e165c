"""ALMoST: comparison rules and filter (hand-made rows), reward model and RL step (real 135M student), the branch
materialized end to end with best-of-N, and exact staleness after a demonstration is edited."""

from __future__ import annotations

import json

import duckdb
import numpy as np
from datasets import Dataset
from safetensors.numpy import load_file

from dsc_assets_tests.conftest import private_tasks, run_cli
from dsc_assets_tests.system.test_incremental import _stale
from resources.reward_model import RewardModelScorer
from resources.trainer import LoRATrainer


def test_reward_model_learns_an_obvious_pair_and_one_rl_step_moves_the_adapter(tmp_path):
    trainer = LoRATrainer(
        base_model="smollm2-135m",
        model_cache_dir=str(tmp_path / "models"),
        max_steps=6,
        per_device_batch_size=2,
        grad_accum=1,
        max_length=128,
        learning_rate=1e-3,
        rl_num_generations=2,
        rl_max_completion_length=8,
    )
    system = {"role": "system", "content": "You write short movie reviews."}
    good = "A warm, well-acted film with a moving score and a story that stays with you."
    rows = [
        {
            "prompt": [system, {"role": "user", "content": f"Review {film}."}],
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": "bad bad bad bad"}],
        }
        for film in ("Up", "Alien", "Heat", "Jaws")
    ]
    model = trainer.train_reward_model(Dataset.from_list(rows), str(tmp_path / "rm"))
    assert model.losses[-1] < model.losses[0]
    scorer = RewardModelScorer(model.merged_dir)
    unseen = [system, {"role": "user", "content": "Review Casablanca."}]
    chosen, rejected = scorer.score([unseen, unseen], [good, "bad bad bad bad"])
    assert chosen > rejected

    def reward(prompts, completions, **_):
        return scorer.score(prompts, [c[-1]["content"] for c in completions])

    policy = trainer.model_copy(update={"max_steps": 1})
    result = policy.train_rl(
        Dataset.from_list([{"prompt": r["prompt"]} for r in rows[:2]]),
        str(trainer.base_dir()),
        reward,
        str(tmp_path / "rl"),
    )
    assert result.steps == 1
    adapter = load_file(str(next((tmp_path / "rl" / "adapter").glob("*.safetensors"))))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and max(float(np.abs(v).max()) for v in lora_b) > 0  # LoRA B starts at zero: the step moved it


ALMOST_BRANCH = (
    "raw_prompts,almost_responses,synthetic_comparisons,reward_model,rmsp_demonstrations,"
    "almost_sft_checkpoint,almost_rl_checkpoint"
)


# Prompts per task in the branch tests. The held-out fold is drawn per prompt id, and with 3 prompts it left one in
# train, whose comparisons the filter could drop entirely on some CPUs (the 135M model's texts follow the kernels:
# on an AVX2-only EPYC both configurations of one model answered alike, and all 5 train-fold comparisons fell out as
# identical or too short). With 4, the test profile's max_prompts_per_task, the train fold holds 3.
PROMPTS = 4


def test_almost_branch_materializes_keeps_the_best_sample_and_rebuilds_exactly_on_edit(tmp_path):
    root = private_tasks(tmp_path / "prompts", {"sentiment": PROMPTS})
    task_file = root / "sentiment" / "task.yaml"
    task_file.write_text(task_file.read_text().replace("best_of_n: 4", "best_of_n: 3"))
    profile = tmp_path / "almost.yaml"  # the test profile, with a cheaper RL step: two samples per prompt, short
    profile.write_text(
        open("profiles/test.yaml")
        .read()
        .replace("trainer:\n", "trainer:\n  rl_num_generations: 2\n  rl_max_completion_length: 16\n")
    )
    (tmp_path / "dagster").mkdir()
    env = {
        "DSC_PROFILE": str(profile),
        "DSC_PROMPTS_DIR": str(root),
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    run = run_cli(["dsc", "run", "--tasks", "sentiment", "--select", ALMOST_BRANCH], env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        responses = con.execute("SELECT * FROM dsc.almost_responses").df()
        comparisons = con.execute("SELECT * FROM dsc.synthetic_comparisons").df()
        model = con.execute("SELECT * FROM dsc.reward_model").df().iloc[0]
        demos = con.execute("SELECT * FROM dsc.rmsp_demonstrations").df()
        rl = con.execute("SELECT * FROM dsc.almost_rl_checkpoint").df().iloc[0]
    assert sorted(responses["config"].unique()) == ["A", "B", "C", "D"] and len(responses) == 4 * PROMPTS
    assert set(comparisons["fold"]) == {"train", "heldout"}
    assert model["status"] == "trained" and model["train_pairs"] > 0
    assert len(demos) == PROMPTS
    for row in demos.itertuples():  # best-of-N keeps the highest-scored of its three candidates
        candidates, scores = json.loads(row.candidates), json.loads(row.candidate_scores)
        assert (
            len(candidates) == 3 and row.rm_score == max(scores) and row.response == candidates[int(np.argmax(scores))]
        )
    assert rl["status"] == "trained" and rl["gguf_path"].endswith(".gguf")

    # an edited demonstration makes exactly the ALMoST assets that read it stale (and, through data, below them)
    task_file.write_text(task_file.read_text().replace("Julie Andrews is radiant", "Julie Andrews is luminous"))
    plan = run_cli(["dsc", "plan", "--tasks", "sentiment", "--select", ALMOST_BRANCH], env)
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-2000:]
    assert _stale(plan.stdout, roots_only=True) == {
        ("almost_responses", "sentiment"),
        ("rmsp_demonstrations", "sentiment"),
    }, plan.stdout
    below = {(name, "sentiment") for name in ALMOST_BRANCH.split(",")[1:]}
    assert _stale(plan.stdout) == below, plan.stdout  # raw_prompts and everything outside ALMoST stay fresh


def test_comparisons_all_longer_than_max_length_skip_the_reward_model_and_the_gate_says_why(tmp_path):
    """A task whose every comparison is longer than the trainer's max_length (TRL drops those): reward_model
    skips with the rule and the fix in its table, the run succeeds, and `dsc gate` names the skipped step on the
    line of the table it left empty."""
    root = private_tasks(tmp_path / "prompts", {"sentiment": PROMPTS})
    profile = tmp_path / "short.yaml"  # the test profile with a max_length no comparison fits in
    profile.write_text(open("profiles/test.yaml").read().replace("  max_length: 96\n", "  max_length: 16\n"))
    env = {
        "DSC_PROFILE": str(profile),
        "DSC_PROMPTS_DIR": str(root),
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    select = "raw_prompts,almost_responses,synthetic_comparisons,reward_model,rmsp_demonstrations"
    run = run_cli(["dsc", "run", "--tasks", "sentiment", "--select", select], env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        model = con.execute("SELECT * FROM dsc.reward_model").df().iloc[0]
        demos = con.execute("SELECT count(*) FROM dsc.rmsp_demonstrations").fetchone()[0]
    assert model["status"].startswith("skipped: all ") and "longer than trainer.max_length=16 tokens" in model["status"]
    assert "raise trainer.max_length" in model["status"] and demos == 0
    gate = run_cli(["dsc", "gate", "--tasks", "sentiment", "--check-only", "--assets", "rmsp_demonstrations"], env)
    line = next(line for line in gate.stdout.splitlines() if line.strip().startswith("rmsp_demonstrations"))
    assert "upstream reward_model skipped: all " in line, gate.stdout
