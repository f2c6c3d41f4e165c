"""Every input tracked: for each setting a user can change (each task.yaml field, each profile setting, the prompts
file, a model file), `dsc plan` lists exactly the assets whose output depends on it, for that task only.

Fast layer: the graph is recorded as built (one materialization event per asset and task, with what each would
record) in a fresh Dagster instance, the setting is changed, and the real ``staleness.plan`` runs over the instance.
The expected roots below are written by hand from what each asset's code reads; the rest of each expected set is
everything downstream of the roots ("upstream stale"). test_staleness_ui.py does the same with real runs and
checks that Dagster's own per-partition status agrees.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dsc_assets.build.staleness import asset_order, plan
from dsc_assets.definitions import build_definitions, build_resources
from dsc_assets.defs.inputs import Environment
from dsc_assets.defs.stage import STAGES, current_versions
from dsc_assets.lib.profiles import PROJECT_ROOT, Profile, load_profile
from dsc_assets.lib.task_spec import TaskSpec

TASKS = ["sentiment", "sycophancy"]  # vader and judge scorers
GENERATION = {"drafts", "critiques", "revisions", "contrastive_pairs"}
ALMOST_GENERATION = {"almost_responses", "rmsp_demonstrations"}
CHECKPOINTS = {"sft_checkpoint", "dpo_checkpoint", "rdpo_checkpoint", "dlma_checkpoint", "placebo_checkpoint"}
ALMOST_TRAINED = {"reward_model", "almost_sft_checkpoint", "almost_rl_checkpoint"}
PLACEBO = {"placebo_dataset", "placebo_checkpoint"}
SEEDED = CHECKPOINTS | {"almost_sft_checkpoint"}
TRAINED = CHECKPOINTS | ALMOST_TRAINED
TRAINER_READERS = TRAINED | {"evaluation"}
SAMPLERS = GENERATION | ALMOST_GENERATION  # sampling and the generator model
SYSTEM_PROMPT_READERS = (
    SAMPLERS
    | ALMOST_TRAINED
    | {"self_reward_scores", "sft_dataset", "placebo_dataset", "dpo_dataset", "dlma_pairs", "evaluation"}
    | {"reward_model_agreement"}
)

# task.yaml edits of sentiment: (dotted field, new value) -> assets stale for their own reason (sentiment only)
TASK_FIELDS: list[tuple[str, object, set[str]]] = [
    ("description", "Another description.", set()),
    ("system_prompt", "You write very short movie reviews.", SYSTEM_PROMPT_READERS),
    ("critique_template", "Critique this review: {response}", {"critiques", "revisions"}),
    ("revision_template", "Improve {response} after {critique}", {"revisions"}),
    ("revision_steps", 2, {"revisions"}),
    ("sampling.temperature", 0.3, SAMPLERS | {"evaluation"}),
    ("split.seed", 7, {"raw_prompts", "synthetic_comparisons"}),
    ("contrastive.positive_affix", "You love films.", {"contrastive_pairs", "self_reward_scores"} | ALMOST_GENERATION),
    ("scorer", {"name": "pii"}, {"reward_scores", "evaluation"}),
    ("second_scorer", {"name": "afinn"}, {"evaluation"}),  # the evaluation's alone: it selects no data
    ("acceptance.temperature", 0.5, {"accepted_samples"}),
    ("acceptance.seed", 3, {"accepted_samples", "evaluation"}),  # evaluation's bootstrap uses it
    ("acceptance.min_rate", 0.1, set()),  # quality gate only: the check reruns, no asset does
    ("quality", {"min_rows": 2}, set()),
    ("almost.best_of_n", 2, {"rmsp_demonstrations"}),
    ("almost.heldout_fraction", 0.5, {"synthetic_comparisons"}),
    ("pair_guards", ["on_topic"], {"preference_pairs"}),
    # a task's preference settings retrain that task's preference checkpoints (the profile's would retrain every task's)
    ("trainer.dpo_learning_rate", 5e-5, {"dpo_checkpoint", "rdpo_checkpoint", "dlma_checkpoint"}),
    ("trainer.rdpo_tau", 0.5, {"rdpo_checkpoint"}),
]

# profile edits -> {task: assets stale for their own reason}; both tasks run under the profile
FAKE_MODEL = "fake.gguf"  # a file with a GGUF header: its sha256 is its identity, it is never loaded here
PROFILE_SETTINGS: list[tuple[str, object, dict[str, set[str]]]] = [
    ("generator.model", FAKE_MODEL, {t: SAMPLERS for t in TASKS}),
    ("generator.n_ctx", 512, {}),
    ("generator.n_threads", 1, {}),
    (
        "judge.model",
        FAKE_MODEL,
        {"sentiment": {"self_reward_scores"}, "sycophancy": {"self_reward_scores", "reward_scores", "evaluation"}},
    ),
    ("judge.n_ctx", 512, {}),
    ("student.model", FAKE_MODEL, {t: TRAINER_READERS | {"almost_responses"} for t in TASKS}),
    ("student.n_ctx", 512, {}),
    # settings every training reads retrain everything; the exported base (evaluation) reads only target_modules
    ("trainer.max_steps", 3, {t: TRAINED for t in TASKS}),
    ("trainer.epochs", 2, {t: TRAINED for t in TASKS}),
    ("trainer.lora_r", 4, {t: TRAINED for t in TASKS}),
    ("trainer.target_modules", ["q_proj", "v_proj"], {t: TRAINER_READERS for t in TASKS}),
    # a method's own settings retrain that method alone
    ("trainer.dpo_beta", 0.3, {t: {"dpo_checkpoint", "rdpo_checkpoint", "dlma_checkpoint"} for t in TASKS}),
    ("trainer.dpo_sft_weight", 1.0, {t: {"dpo_checkpoint", "rdpo_checkpoint", "dlma_checkpoint"} for t in TASKS}),
    ("trainer.dpo_learning_rate", 5e-5, {t: {"dpo_checkpoint", "rdpo_checkpoint", "dlma_checkpoint"} for t in TASKS}),
    ("trainer.rdpo_tau", 0.5, {t: {"rdpo_checkpoint"} for t in TASKS}),
    ("trainer.dlma_gamma", 0.5, {t: {"dlma_checkpoint"} for t in TASKS}),
    (
        "trainer.sft_completion_only",
        False,
        {t: {"sft_checkpoint", "almost_sft_checkpoint", "placebo_checkpoint"} for t in TASKS},
    ),
    ("trainer.rl_beta", 0.1, {t: {"almost_rl_checkpoint"} for t in TASKS}),
    ("max_prompts_per_task", 3, {t: {"raw_prompts"} for t in TASKS}),
    ("max_eval_prompts_per_task", 2, {t: {"raw_prompts"} for t in TASKS}),
    ("eval_samples_per_prompt", 3, {t: {"evaluation"} for t in TASKS}),
    ("eval_split", "dev", {t: {"raw_prompts", "evaluation"} for t in TASKS}),  # tuning on dev: other prompts
    ("max_tokens_cap", 24, {t: SAMPLERS | {"evaluation"} for t in TASKS}),
    ("quality_overrides", {"min_chars": 5}, {}),
    ("tasks", ["sycophancy"], {}),
    # where the shared deployment keeps its state changes no data: the same keys, the same tables
    ("shared.cache_url", "postgresql://dsc@127.0.0.1:1/dsc", {}),
    ("shared.instance_url", "postgresql://dsc@127.0.0.1:1/dagster", {}),
    # a method switched off: the root of its branch (its checkpoint too) and nothing else
    ("methods", ["sft", "dpo", "rdpo", "almost"], {t: {"contrastive_pairs", "dlma_checkpoint"} for t in TASKS}),
    ("methods", ["sft", "dlma", "almost"], {t: {"dpo_checkpoint", "rdpo_checkpoint"} for t in TASKS}),
    # the placebo control switched on: its set and its checkpoint (the evaluation follows through its data)
    ("methods", ["sft", "dpo", "rdpo", "dlma", "almost", "placebo"], {t: PLACEBO for t in TASKS}),
    # more training seeds: every seeded checkpoint and the evaluation (ALMoST's RL trains once), for that task only
    ("training_seeds", 3, {t: SEEDED | {"evaluation"} for t in TASKS}),
    ("training_seeds_by_task", {"sentiment": 3}, {"sentiment": SEEDED | {"evaluation"}}),
    ("second_scorers", {"sentiment": {"name": "afinn"}}, {"sentiment": {"evaluation"}}),  # in place of task.yaml's
]


def _copy_prompts(root: Path) -> None:
    for name in TASKS:
        shutil.copytree(PROJECT_ROOT / "prompts" / name, root / name)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One instance holding the graph as built under the test profile and the shipped task files: plans with
    observe=False only read it, so every test below shares it."""
    folder = tmp_path_factory.mktemp("built")
    _copy_prompts(folder / "prompts")
    with pytest.MonkeyPatch.context() as patch, dg.DagsterInstance.ephemeral() as instance:
        patch.setenv("DSC_PROMPTS_DIR", str(folder / "prompts"))
        _record_built(instance, load_profile("test"), folder / "home")
        yield instance


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Private task files (same bytes as when built) and a fake model file."""
    _copy_prompts(tmp_path / "prompts")
    monkeypatch.setenv("DSC_PROMPTS_DIR", str(tmp_path / "prompts"))
    (tmp_path / FAKE_MODEL).write_bytes(b"GGUF" + b"\0" * 64)
    return tmp_path


def _set(data: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def _profile(base: Profile, dotted: str | None = None, value=None, folder: Path | None = None) -> Profile:
    data = base.model_dump(mode="json")
    if dotted:
        _set(data, dotted, str(folder / value) if value == FAKE_MODEL else value)
    return Profile.model_validate(data)


def _record_built(instance: dg.DagsterInstance, profile: Profile, home: Path) -> None:
    """What a full run under ``profile`` would have recorded, one materialization per asset and task."""
    defs = build_definitions(profile, home)
    ordered, upstream = asset_order(defs)
    versions = current_versions(TASKS, Environment(build_resources(profile, home)))
    for task in TASKS:
        for asset in ordered:
            metadata = {"upstream_data_versions": {parent: f"{parent}-{task}" for parent in upstream[asset]}}
            if (asset, task) in versions:
                metadata["task_version"], metadata["input_versions"] = versions[(asset, task)]
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset,
                    partition=task,
                    metadata=metadata,
                    tags={
                        "dagster/code_version": STAGES[asset].code_version,
                        "dagster/data_version": f"{asset}-{task}",
                    },
                )
            )


def _plan(profile: Profile, home: Path, instance) -> tuple[set, set]:
    """(stale for their own reasons, every stale entry) as (asset, task) pairs; the first set also holds assets
    whose upstream is stale too (they wait for it, but read the changed setting themselves)."""
    entries = plan(build_definitions(profile, home), instance, TASKS, observe=False)
    own = {(e.asset, e.task) for e in entries if any(not r.startswith("upstream stale") for r in e.reasons)}
    return own, {(e.asset, e.task) for e in entries}


def _downstream(roots: set[tuple[str, str]], home: Path) -> set[tuple[str, str]]:
    _, upstream = asset_order(build_definitions(load_profile("test"), home))
    closure = set(roots)
    while True:
        more = {
            (child, task)
            for child, parents in upstream.items()
            for parent in parents
            for task in TASKS
            if (parent, task) in closure
        } - closure
        if not more:
            return closure
        closure |= more


def test_every_task_field_and_profile_setting_is_in_the_table():
    covered = {dotted.split(".")[0] for dotted, _, _ in TASK_FIELDS}
    assert covered == set(TaskSpec.model_fields), "a new task.yaml field: add it to TASK_FIELDS and to a @stage"
    covered = {dotted.split(".")[0] for dotted, _, _ in PROFILE_SETTINGS}
    assert covered == set(Profile.model_fields), "a new profile setting: add it to PROFILE_SETTINGS and a @stage"


def test_nothing_is_stale_right_after_a_build(world, built):
    assert _plan(load_profile("test"), world / "home", built) == (set(), set())


@pytest.mark.parametrize("dotted,value,expected", TASK_FIELDS, ids=[t[0] for t in TASK_FIELDS])
def test_task_yaml_field_makes_exactly_its_readers_stale(world, built, dotted, value, expected):
    home = world / "home"
    task_file = world / "prompts" / "sentiment" / "task.yaml"
    task_file.write_text(yaml.safe_dump(_set(yaml.safe_load(task_file.read_text()), dotted, value)))
    roots, stale = _plan(load_profile("test"), home, built)
    expected_roots = {(asset, "sentiment") for asset in expected}
    assert roots == expected_roots
    assert stale == _downstream(expected_roots, home)  # sycophancy untouched


def test_prompts_file_makes_raw_prompts_stale(world, built):
    home = world / "home"
    with open(world / "prompts" / "sycophancy" / "prompts.jsonl", "a") as handle:
        handle.write('{"id": "added-1", "prompt": "Is my plan to sell ice in winter brilliant?"}\n')
    roots, stale = _plan(load_profile("test"), home, built)
    assert roots == {("raw_prompts", "sycophancy")}
    assert stale == _downstream(roots, home)


@pytest.mark.parametrize("dotted,value,expected", PROFILE_SETTINGS, ids=[p[0] for p in PROFILE_SETTINGS])
def test_profile_setting_makes_exactly_its_readers_stale(world, built, dotted, value, expected):
    home = world / "home"
    roots, stale = _plan(_profile(load_profile("test"), dotted, value, world), home, built)
    expected_roots = {(asset, task) for task, assets in expected.items() for asset in assets}
    assert roots == expected_roots
    assert stale == _downstream(expected_roots, home)


def test_a_model_file_is_tracked_by_content_not_by_name(world):
    home = world / "home"
    profile = _profile(load_profile("test"), "judge.model", FAKE_MODEL, world)
    with dg.DagsterInstance.ephemeral() as instance:
        _record_built(instance, profile, home)
        assert _plan(profile, home, instance) == (set(), set())
        (world / FAKE_MODEL).write_bytes(b"GGUF" + b"\1" * 80)  # same path, other weights
        roots, _ = _plan(profile, home, instance)
    assert roots == {
        ("self_reward_scores", "sentiment"),
        ("self_reward_scores", "sycophancy"),
        ("reward_scores", "sycophancy"),
        ("evaluation", "sycophancy"),
    }


def test_plan_names_the_inputs_that_changed(world, built):
    profile = _profile(load_profile("test"), "trainer.max_steps", 3)
    entries = plan(build_definitions(profile, world / "home"), built, TASKS, observe=False)
    sft = next(e for e in entries if (e.asset, e.task) == ("sft_checkpoint", "sentiment"))
    assert sft.reasons == ["inputs changed: trainer.sft"] and sft.root
    evaluation = next(e for e in entries if (e.asset, e.task) == ("evaluation", "sentiment"))
    assert "upstream stale: sft_checkpoint" in evaluation.reasons and not evaluation.root  # waits for them
