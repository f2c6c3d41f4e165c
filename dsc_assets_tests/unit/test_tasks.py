"""Task folders: the shipped tasks load, and malformed ones get errors naming file, field and fix."""

from __future__ import annotations

import json

import pytest

from dsc_assets.lib.task_spec import TaskError
from dsc_assets.lib.tasks import load_task, task_names

SHIPPED = ["privacy", "roleplay", "safety", "sentiment", "sycophancy"]


def test_shipped_tasks_load_with_at_least_100_distinct_prompts():
    assert set(SHIPPED) <= set(task_names())
    for name in SHIPPED:
        task = load_task(name)
        prompts = [p.prompt for p in task.prompts]
        assert len(prompts) >= 100, name
        assert len(set(prompts)) == len(prompts), f"{name} has duplicate prompts"
        assert task.spec.scorer is not None and task.spec.contrastive is not None


def _write_task(root, name="demo", task_yaml=None, prompts=None):
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    if task_yaml is None:
        task_yaml = (
            "description: demo\n"
            "system_prompt: You are helpful.\n"
            "critique_template: 'Critique this: {response}'\n"
            "revision_template: 'Revise {response} after {critique}'\n"
        )
    (folder / "task.yaml").write_text(task_yaml)
    if prompts is None:
        prompts = "\n".join(json.dumps({"id": f"p{i}", "prompt": f"Question {i}?"}) for i in range(3))
    (folder / "prompts.jsonl").write_text(prompts)
    return folder


def _error(root, **kwargs) -> str:
    _write_task(root, **kwargs)
    with pytest.raises(TaskError) as info:
        load_task("demo", root)
    return str(info.value)


def test_valid_minimal_task_loads_with_defaults(tmp_path):
    _write_task(tmp_path)
    task = load_task("demo", tmp_path)
    assert [p.id for p in task.prompts] == ["p0", "p1", "p2"]
    assert task.spec.revision_steps == 1 and task.lines == {"p0": 1, "p1": 2, "p2": 3}
    assert task_names(tmp_path) == ["demo"]


def test_missing_field_names_file_field_and_expected_value(tmp_path):
    message = _error(
        tmp_path, task_yaml="description: d\nsystem_prompt: s\nrevision_template: '{response} {critique}'\n"
    )
    assert "demo/task.yaml" in message
    assert "field 'critique_template' is missing" in message
    assert "{response}" in message


def test_misspelled_field_suggests_the_right_name(tmp_path):
    message = _error(
        tmp_path,
        task_yaml="description: d\nsystem_prompt: s\ncritque_template: 'x {response}'\n"
        "critique_template: '{response}'\nrevision_template: '{response} {critique}'\n",
    )
    assert "field 'critque_template' is not a task setting" in message
    assert "did you mean 'critique_template'" in message


def test_template_without_required_placeholder(tmp_path):
    message = _error(
        tmp_path,
        task_yaml="description: d\nsystem_prompt: s\ncritique_template: '{response}'\nrevision_template: 'Rewrite {response}'\n",
    )
    assert "field 'revision_template' must contain {critique}" in message


def test_template_with_unknown_placeholder(tmp_path):
    message = _error(
        tmp_path,
        task_yaml="description: d\nsystem_prompt: s\ncritique_template: '{response} {answer}'\n"
        "revision_template: '{response} {critique}'\n",
    )
    assert "unknown placeholder(s) {answer}" in message


def test_invalid_yaml_reports_line(tmp_path):
    message = _error(tmp_path, task_yaml="description: d\nsystem_prompt: [unclosed\ncritique_template: x\n")
    assert "not valid YAML at line" in message


def test_an_unclosed_quote_is_reported_at_the_line_it_opens(tmp_path):
    """YAML notices an unclosed quote only at the end of the file: the error names the quote's own line."""
    lines = ["description: d", 'system_prompt: "You are helpful.', "critique_template: 'Critique: {response}'"]
    lines += [f"# comment {i}" for i in range(40)] + ["revision_template: 'Revise {response} after {critique}'"]
    message = _error(tmp_path, task_yaml="\n".join(lines) + "\n")
    assert "task.yaml: not valid YAML at line 2, column 16: while scanning a quoted scalar" in message
    assert "(noticed at line 45)" in message


def test_a_prompts_file_that_is_not_utf8_names_its_line_and_byte(tmp_path):
    folder = _write_task(tmp_path)
    lines = (folder / "prompts.jsonl").read_bytes().split(b"\n")
    lines[1] = lines[1][:12] + b"\xe9" + lines[1][12:]  # a Latin-1 e-acute
    (folder / "prompts.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(TaskError) as info:
        load_task("demo", tmp_path)
    offset = len(lines[0]) + 1 + 12
    assert str(info.value) == (
        f"{folder / 'prompts.jsonl'}:2: not UTF-8 text (byte 0xe9 at byte offset {offset}, "
        "column 13 of that line); save the file as UTF-8"
    )


def test_wrong_type_and_out_of_range_values(tmp_path):
    message = _error(
        tmp_path,
        task_yaml="description: d\nsystem_prompt: s\ncritique_template: '{response}'\n"
        "revision_template: '{response} {critique}'\nrevision_steps: two\nsampling:\n  temperature: 7\n",
    )
    assert "field 'revision_steps'" in message and "integer" in message
    assert "field 'sampling.temperature'" in message


def test_prompts_file_bad_json_line_number(tmp_path):
    message = _error(tmp_path, prompts='{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": oops}\n')
    assert "prompts.jsonl:2: not valid JSON" in message


def test_prompts_file_duplicate_id_and_missing_prompt(tmp_path):
    duplicate = _error(tmp_path, prompts='{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    assert "prompts.jsonl:2: id 'a' repeats line 1" in duplicate
    missing = _error(tmp_path, prompts='{"id": "a", "text": "x"}\n')
    assert "prompts.jsonl:1: field 'prompt' is missing" in missing


def test_blank_prompt_and_empty_file(tmp_path):
    assert "is blank" in _error(tmp_path, prompts='{"id": "a", "prompt": "   "}\n')
    assert "holds no prompts" in _error(tmp_path, prompts="\n\n")


def test_missing_files(tmp_path):
    folder = _write_task(tmp_path)
    (folder / "prompts.jsonl").unlink()
    with pytest.raises(TaskError, match="prompts.jsonl: file is missing"):
        load_task("demo", tmp_path)
    with pytest.raises(TaskError, match="no such task folder"):
        load_task("nope", tmp_path)


def test_trainer_block_sets_only_the_preference_losses_settings(tmp_path):
    minimal = (
        "description: d\nsystem_prompt: s\ncritique_template: '{response}'\n"
        "revision_template: '{response} {critique}'\n"
    )
    _write_task(tmp_path, task_yaml=minimal + "trainer:\n  dpo_learning_rate: 5.0e-5\n  dpo_beta: 0.2\n")
    assert load_task("demo", tmp_path).spec.trainer.overrides() == {"dpo_learning_rate": 5e-5, "dpo_beta": 0.2}
    _write_task(tmp_path, task_yaml=minimal + "trainer:\n  dpo_learning_rate: null\n")  # explicit: SFT's rate
    assert load_task("demo", tmp_path).spec.trainer.overrides() == {"dpo_learning_rate": None}
    message = _error(tmp_path, task_yaml=minimal + "trainer:\n  learning_rate: 1.0e-4\n")
    assert "field 'trainer.learning_rate' is not a task setting" in message  # SFT's: the profile's alone
    message = _error(tmp_path, task_yaml=minimal + "trainer:\n  dpo_beta: -1\n")
    assert "field 'trainer.dpo_beta'" in message and "dpo_learning_rate, dpo_sft_weight" in message


def test_the_trainer_block_names_exactly_the_preference_checkpoints_own_settings():
    """PreferenceTraining repeats LoRATrainer's preference settings (with stricter ranges): a setting added to the
    preference methods (METHOD_SETTINGS) must be settable per task too, and nothing the other trainings read may be."""
    from dsc_assets.lib.task_spec import PreferenceTraining
    from resources.trainer import METHOD_SETTINGS, LoRATrainer

    own = {name for method in ("dpo", "rdpo", "dlma") for name in METHOD_SETTINGS[method]}
    shared = {
        name for method, names in METHOD_SETTINGS.items() if method not in ("dpo", "rdpo", "dlma") for name in names
    }
    assert set(PreferenceTraining.model_fields) == own - shared
    assert set(PreferenceTraining.model_fields) <= set(LoRATrainer.model_fields)


def test_a_tasks_trainer_block_changes_only_its_preference_checkpoints_identity():
    from resources.trainer import LoRATrainer

    profile = LoRATrainer(dpo_sft_weight=1.0)
    task = profile.with_overrides({"dpo_learning_rate": 5e-5})
    assert profile.with_overrides({}) is profile
    assert task.method_settings("dpo")["dpo_learning_rate"] == 5e-5 and task.dpo_sft_weight == 1.0  # the rest kept
    for method in ("dpo", "rdpo", "dlma"):
        assert task.settings_identity(method) != profile.settings_identity(method)
    for method in ("sft", "almost_sft", "reward_model", "export"):
        assert task.settings_identity(method) == profile.settings_identity(method)


def test_every_shipped_task_splits_by_linked_groups_with_no_leak_and_enough_held_out():
    """No group (declared, near-duplicate wording, shared name) in two splits; the sizes the study protocol asks
    for (docs/study-protocol.md): >= 40 test and >= 20 dev prompts, >= 64 train."""
    from collections import Counter

    from dsc_assets.lib.leaks import cross_split_links

    for name in SHIPPED:
        task = load_task(name)
        assert task.spec.split.group_by == "linked", name
        splits_of_group: dict[str, set[str]] = {}
        for prompt_id, group in task.groups.items():
            splits_of_group.setdefault(group, set()).add(task.split_of(prompt_id))
        assert all(len(s) == 1 for s in splits_of_group.values()), name
        assert cross_split_links(task.prompts, task.split_of) == [], name
        sizes = Counter(task.split_of(p.id) for p in task.prompts)
        assert sizes["test"] >= 40 and sizes["dev"] >= 20 and sizes["train"] >= 64, (name, sizes)


def _leak_task(root, group_by: str) -> None:
    prompts = [
        {"id": "a1", "prompt": "Write a harsh review of Casablanca for the school paper, please."},
        {"id": "a2", "prompt": "Write a harsh review of Vertigo for the school paper, please."},  # a1's twin
        {"id": "b1", "prompt": "Tell a story about Margaret Ellison winning the town's pie contest."},
        {"id": "b2", "prompt": "Cover the bake sale where Margaret Ellison sold out by noon."},  # shares the name
        *({"id": f"c{i}", "prompt": f"Question number {i} about {w} stands alone?"} for i, w in enumerate("xyzuvw")),
    ]
    task_yaml = (
        "description: demo\nsystem_prompt: You are helpful.\ncritique_template: 'Critique this: {response}'\n"
        f"revision_template: 'Revise {{response}} after {{critique}}'\nsplit:\n  test_fraction: 0.5\n"
        f"  seed: 2\n  group_by: {group_by}\n"  # seed 2: by id, both planted pairs land across splits
    )
    _write_task(root, task_yaml=task_yaml, prompts="\n".join(json.dumps(p) for p in prompts))


def test_a_planted_near_duplicate_across_splits_is_named_and_linked_grouping_keeps_it_on_one_side(tmp_path):
    from dsc_assets.lib.leaks import cross_split_links, links

    _leak_task(tmp_path, "id")
    task = load_task("demo", tmp_path)
    reasons = {(link.first, link.second): link.reason for link in links(task.prompts)}
    assert reasons[("a1", "a2")].startswith("wording (Jaccard 1.00)")  # the titles are masked
    assert reasons[("b1", "b2")] == "both name 'Margaret Ellison'"
    assert not any(k[0].startswith("c") for k in reasons)  # distinct questions are not linked
    by_id = {(link.first, link.second): (a, b) for link, a, b in cross_split_links(task.prompts, task.split_of)}
    crossing = {pair for pair in reasons if task.split_of(pair[0]) != task.split_of(pair[1])}
    assert set(by_id) == crossing == {("a1", "a2"), ("b1", "b2")}
    _leak_task(tmp_path, "linked")
    task = load_task("demo", tmp_path)
    assert task.groups["a2"] == "a1" and task.groups["b2"] == "b1" and task.groups["c3"] == "c3"
    assert cross_split_links(task.prompts, task.split_of) == []


def test_declared_groups_and_the_old_id_split_are_unchanged_without_group_by(tmp_path):
    """A task without the new fields splits exactly as before (a hash of seed and id): existing homes stay fresh."""
    from resources.hashing import content_hash

    prompts = [{"id": f"p{i}", "prompt": f"Question {i}?"} for i in range(40)]
    prompts[1]["group"] = prompts[2]["group"] = "pair"
    _write_task(tmp_path, prompts="\n".join(json.dumps(p) for p in prompts))
    task = load_task("demo", tmp_path)
    old = lambda i: "test" if int(content_hash("split", 0, i, length=8), 16) / 16**8 < 0.2 else "train"  # noqa: E731
    assert all(task.split_of(f"p{i}") == old(f"p{i}") for i in range(3, 40))
    assert task.split_of("p1") == task.split_of("p2") and task.groups["p1"] == "pair"
    assert task.spec.split.identity() == {"test_fraction": 0.2, "seed": 0}
