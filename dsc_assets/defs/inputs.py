"""What a stage can read besides its upstream data: task.yaml fields, the prompts file, profile settings, models by
content. ``reads=`` in ``@stage`` names entries of ``INPUTS``; each entry knows how to get its value for one task
from the graph's resources (an ``Environment``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from dsc_assets.lib.task_spec import PreferenceTraining
from dsc_assets.lib.tasks import Task
from resources.models import resolve_model
from resources.settings import METHODS
from resources.trainer import METHOD_SETTINGS


class Environment:
    """The resources a version is computed from (settings, llm, rewards, student, trainer), with the model files'
    identities remembered: hashing a GGUF costs up to seconds, and a plan asks for each many times."""

    def __init__(self, resources: Mapping[str, Any] | Any):
        get = resources.get if isinstance(resources, Mapping) else lambda name: getattr(resources, name, None)
        self.settings, self.llm, self.rewards = get("settings"), get("llm"), get("rewards")
        self.student, self.trainer = get("student"), get("trainer")
        self._memo: dict[tuple, Any] = {}

    def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = compute()
            except Exception as error:  # noqa: BLE001  a missing model or bad scorer fails the run, not the plan
                self._memo[key] = f"unavailable: {type(error).__name__}: {error}"
        return self._memo[key]


def _gguf_sha(env: Environment, model: str, cache_dir: str) -> str:
    return env.memo(("gguf", model, cache_dir), lambda: f"gguf:{resolve_model(model, cache_dir).sha256}")


def _task_field(path: str) -> Callable[[Task, Environment], Any]:
    def value(task: Task, env: Environment) -> Any:
        data: Any = task.spec.model_dump(mode="json")
        for part in path.split("."):
            data = data.get(part) if isinstance(data, dict) else None
        return data

    return value


def _split(task: Task, env: Environment) -> Any:
    return task.spec.split.identity()  # the fields a task leaves at their old defaults are not in its version


def _scorer(task: Task, env: Environment) -> Any:
    scorer = task.spec.scorer
    key = ("scorer", json.dumps(scorer.model_dump(mode="json") if scorer else None, sort_keys=True))
    return env.memo(key, lambda: env.rewards.for_task(scorer).identity())


def _second_scorer_field(task: Task, env: Environment) -> Any:
    scorer = task.second_scorer_for(env.settings.second_scorers)  # none: the version it had before the field
    return OMIT if scorer is None else scorer.model_dump(mode="json")


def _second_scorer(task: Task, env: Environment) -> Any:
    scorer = task.second_scorer_for(env.settings.second_scorers)
    if scorer is None:
        return OMIT
    key = ("scorer", json.dumps(scorer.model_dump(mode="json"), sort_keys=True))
    return env.memo(key, lambda: env.rewards.for_task(scorer).identity())


def _trainer(method: str) -> Callable[[Task, Environment], Any]:
    def value(task: Task, env: Environment) -> Any:
        trainer = env.trainer.with_overrides(task.spec.trainer.overrides())  # the task's preference settings
        # where files live is no setting; the base model goes by content, not by name; other methods' settings are
        # not this checkpoint's (METHOD_SETTINGS)
        settings = {k: v for k, v in trainer.method_settings(method).items() if k != "base_model"}
        return {"settings": settings, "base_model": _gguf_sha(env, trainer.base_model, trainer.model_cache_dir)}

    return value


# An input's value that is left out of the version: a method switched on reads as nothing, so that profiles without
# a `methods` list (every method on) keep the versions they had before the switch existed.
OMIT = object()


@dataclass(frozen=True)
class Input:
    name: str
    description: str
    value: Callable[[Task, Environment], Any]


# The task.yaml fields a stage may read, each with what it decides.
TASK_FIELDS = {
    "split": "train/dev/test split (fractions, seed, grouping)",
    "system_prompt": "system message of every chat",
    "critique_template": "critique request",
    "revision_template": "revision request",
    "revision_steps": "number of critique/revision steps",
    "contrastive": "DLMA's positive and negative affixes",
    "scorer": "reward scorer and its options",
    "acceptance.temperature": "Metropolis-Hastings temperature",
    "acceptance.seed": "acceptance draws and evaluation bootstrap seed",
    "almost.demonstrations": "ALMoST few-shot demonstrations for the better-prompted configurations",
    "almost.best_of_n": "ALMoST: samples per prompt the reward model picks from",
    "almost.rules": "ALMoST: which configuration rankings make comparisons",
    "almost.heldout_fraction": "ALMoST: share of train prompts held out to measure the reward model",
    "almost.drop_truncated": "ALMoST: drop comparisons with an answer cut off at max_tokens",
    "pair_guards": "guards a preference pair's chosen answer must not fail where its rejected one passes",
}


def _profile_inputs() -> list[Input]:
    """The prompts file, the profile's counts and caps, and the models by content."""
    return [
        Input("prompts_file", "the bytes of the task's prompts.jsonl", lambda t, e: t.prompts_file_version),
        Input(
            "max_prompts_per_task", "profile: train prompts used per task", lambda t, e: e.settings.max_prompts_per_task
        ),
        Input(
            "max_eval_prompts_per_task",
            "profile: test prompts used per task",
            lambda t, e: e.settings.max_eval_prompts_per_task,
        ),
        Input(
            "eval_split",
            "profile: the split the evaluation answers (test: the study's, ledgered; dev: where settings are chosen)",
            lambda t, e: OMIT if e.settings.eval_split == "test" else e.settings.eval_split,
        ),
        Input(
            "training_seeds",
            "profile: trainings per seeded checkpoint for this task (training_seeds, training_seeds_by_task)",
            lambda t, e: OMIT if e.settings.seeds_for(t.name) == 1 else e.settings.seeds_for(t.name),
        ),
        Input(
            "eval_samples_per_prompt",
            "profile: seeded samples per test prompt in the evaluation",
            lambda t, e: e.settings.eval_samples_per_prompt,
        ),
        Input(
            "sampling",
            "task.yaml sampling, max_tokens capped by the profile's max_tokens_cap",
            lambda t, e: t.sampling_for(e.settings.max_tokens_cap).model_dump(mode="json"),
        ),
        Input(
            "generator",
            "profile: the generator model by content (GGUF sha256, or server model + revision)",
            lambda t, e: e.memo(("generator",), e.llm.model_identity),
        ),
        Input(
            "scorer_model", "the task's scorer by identity (for a judge: the judge GGUF's sha256, question)", _scorer
        ),
        Input(
            "self_reward_model",
            "profile: the judge model by content (DLMA self-reward)",
            lambda t, e: _gguf_sha(e, e.rewards.judge_model, e.rewards.model_cache_dir),
        ),
        Input(
            "student",
            "profile: the student model by content (evaluated as the base)",
            lambda t, e: e.memo(("student",), e.student.model_identity),
        ),
    ]


def _second_scorer_inputs() -> list[Input]:
    """The evaluation's second reward: left out of the version of a task without one."""
    return [
        Input(
            "task.second_scorer",
            "task.yaml second_scorer: the evaluation's second reward and its options (read by the evaluation alone)",
            _second_scorer_field,
        ),
        Input(
            "second_scorer_model",
            "the task's second scorer by identity (for a judge: its GGUF's sha256, question)",
            _second_scorer,
        ),
    ]


def _trainer_and_method_inputs() -> list[Input]:
    """What each training reads of the trainer (task.yaml ``trainer:`` over the profile's), and the method switches."""

    def source(method: str) -> str:  # where a person changes what trainer.<method> reads
        task_settable = set(METHOD_SETTINGS.get(method, ())) & set(PreferenceTraining.model_fields)
        return "profile or task.yaml trainer" if task_settable else "profile"

    trainers = [
        Input(
            f"trainer.{m}",
            f"{source(m)}: the trainer settings {m} reads and the student it starts from (by content)",
            _trainer(m),
        )
        for m in (*METHOD_SETTINGS, "export")
    ]
    return trainers + [
        Input(
            f"methods.{m}",
            f"profile: whether methods lists {m} (off: its assets write no rows)",
            lambda t, e, m=m: OMIT if e.settings.builds(m) else "off",
        )
        for m in METHODS
    ]


def _inputs() -> dict[str, Input]:
    # task.yaml trainer: is read through trainer.<method> (the task's settings over the profile's), not on its own
    inputs = [
        Input(f"task.{name}", f"task.yaml {name}: {text}", _split if name == "split" else _task_field(name))
        for name, text in TASK_FIELDS.items()
    ]
    inputs += _profile_inputs() + _second_scorer_inputs() + _trainer_and_method_inputs()
    return {i.name: i for i in inputs}


INPUTS = _inputs()
