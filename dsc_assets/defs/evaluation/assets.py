"""Held-out evaluation: the base student and every trained checkpoint answer the test prompts; the task's reward
scores them against the base.

A method trained at several seeds (the profile's ``training_seeds``) is one row: each seed's checkpoint answers every
prompt, and the row's interval resamples prompts and seeds (``seeds``, ``seed_sd`` beside it). With the placebo
control in the profile, the row ``sft vs placebo`` is dSC's SFT against SFT on the unrevised drafts.

With a ``second_scorer`` in task.yaml (or one for the task in the profile's ``second_scorers``), a second reward that selected no data scores the same answers: its mean,
difference from base, interval and p (``second_*``: the same paired bootstrap, seeds and contrasts) and the rank
correlation of the two rewards over each row's answers (``rewards_spearman``) stand beside the first reward's."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from dsc_assets.defs.stage import stage, version_metadata
from dsc_assets.defs.steps import partition_task, sampling_params, scoring_progress
from dsc_assets.lib import ledger
from dsc_assets.lib.chat import ChainMessages
from dsc_assets.lib.commit import git_commit
from dsc_assets.lib.guards import JOB_GUARDS, guard_values, per_prompt, rates_of
from dsc_assets.lib.samples import data_version
from dsc_assets.lib.stats import (
    PER_PROMPT,
    SPEARMAN,
    add_guard_differences,
    add_second_reward,
    evaluation_table,
    per_prompt_json,
    rank_correlation,
)
from dsc_assets.lib.tables import markdown_table
from dsc_assets.lib.task_spec import Scorer
from resources.hashing import content_hash
from resources.llm import GenerationProgress, LlamaCppLLM, side_by_side
from resources.reward_model import cached_scores
from resources.rewards import RewardModels
from resources.settings import DscSettings
from resources.trainer import LoRATrainer


@stage(
    group="evaluation",
    revision=4,
    reads=(
        "task.system_prompt",
        "sampling",
        "task.scorer",
        "scorer_model",
        "task.second_scorer",
        "second_scorer_model",
        "task.acceptance.seed",
        "student",
        "trainer.export",
        "eval_samples_per_prompt",
        "eval_split",
        "training_seeds",
    ),
)
def evaluation(
    context: dg.AssetExecutionContext,
    raw_prompts: pd.DataFrame,
    sft_checkpoint: pd.DataFrame,
    dpo_checkpoint: pd.DataFrame,
    rdpo_checkpoint: pd.DataFrame,
    dlma_checkpoint: pd.DataFrame,
    almost_sft_checkpoint: pd.DataFrame,
    almost_rl_checkpoint: pd.DataFrame,
    placebo_checkpoint: pd.DataFrame,
    reward_model: pd.DataFrame,
    student: LlamaCppLLM,
    rewards: RewardModels,
    trainer: LoRATrainer,
    settings: DscSettings,
) -> dg.Output[pd.DataFrame]:
    """The base student and every trained checkpoint answer the evaluated prompts (cached, seeded), the task's reward
    scores them: mean reward, win rate, bootstrap 95% interval and p of the difference from base, as a table, a
    markdown file and metadata. Every model's mean ALMoST reward-model score stands beside the external reward (one
    that rises while the external reward does not is reward hacking).

    ``base`` is the untrained student served through the same export path as the checkpoints; ``base_original``,
    the packaged quantized student, is the null control: its difference from ``base`` is what export precision
    alone does, and an interval around it that excludes zero means the comparison is not to be trusted.

    ``per_prompt`` holds each model's per-prompt reward (the seeds' mean) and job-guard rates (JSON), so a report can
    recompute the table over a subset of the test prompts (``dsc report --prompts``) without a model call."""
    task = partition_task(context)
    test = raw_prompts[raw_prompts["split"] == settings.eval_split]  # the evaluated prompts: test, or dev to tune
    checkpoints = [sft_checkpoint, dpo_checkpoint, rdpo_checkpoint, dlma_checkpoint]
    checkpoints += [almost_sft_checkpoint, almost_rl_checkpoint, placebo_checkpoint]
    variants, seeded = _variants(context, task.name, checkpoints, student, trainer, settings)
    seed, samples = task.spec.acceptance.seed, settings.eval_samples_per_prompt
    answers, hits = _answer_all(context, task, variants, test, sampling_params(task, settings), samples)
    answers = _by_method(answers, seeded)
    second_scorer = task.second_scorer_for(settings.second_scorers)
    with scoring_progress(context, f"{task.name} evaluation"):
        table, rewards_by_model, second = _table(task, test, answers, rewards, samples, seeded, second_scorer)
    if len(reward_model) and reward_model.iloc[0]["status"] == "trained":
        table["reward_model_score"] = table["model"].map(
            _reward_model_means(reward_model.iloc[0], task, test, answers, samples, student.cache_path)
        )
    table = _guard_columns(table, task.name, test, answers, rewards_by_model, seed, second)
    markdown, report = _write_report(context, task, settings, test, table, answers, rewards_by_model, second_scorer)
    if settings.eval_split == "test":
        _record_look(context, task.name, settings, sorted(answers), len(test))
    return dg.Output(
        table,
        data_version=data_version(table),
        metadata={
            "evaluation": dg.MetadataValue.md(markdown),
            "report": dg.MetadataValue.path(str(report)),
            "test_prompts": dg.MetadataValue.int(len(test)),
            "split": dg.MetadataValue.text(settings.eval_split),
            "cache_hits": dg.MetadataValue.int(hits),
            **version_metadata(context, task),
        },
    )


def _write_report(context, task, settings, test, table, answers, rewards_by_model, second_scorer):
    """The table as markdown, in the run log and in the task's ``evaluation.md`` (returned with its path)."""
    markdown = markdown_table(table.drop(columns=["task", PER_PROMPT]))
    report = settings.artifact_path("reports", task.name, "evaluation.md")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(evaluation_report(task, test, markdown, answers, rewards_by_model, second_scorer))
    context.log.info(f"{task.name} evaluation ({settings.eval_split} split):\n{markdown}")
    return markdown, report


def _record_look(context, task: str, settings: DscSettings, models: list[str], prompts: int) -> None:
    """One line in the ledger: this run evaluated the test split (lib/ledger.py)."""
    look = ledger.record(
        Path(settings.ledger_path),
        task=task,
        profile=settings.profile,
        profile_sha=settings.profile_sha,
        commit=git_commit(),
        run_id=context.run_id,
        models=models,
        prompts=prompts,
        samples=settings.eval_samples_per_prompt,
        training_seeds=settings.seeds_for(task),
    )
    context.log.info(f"{task}: test split evaluated; recorded in the ledger {settings.ledger_path}: {look}")


def _reward_model_means(
    model: pd.Series, task, test: pd.DataFrame, answers: dict[str, list[str]], samples: int, cache_path: str
) -> dict[str, float]:
    """Each model's mean ALMoST reward-model score over its answers (beside the external reward: one that rises
    while the external reward does not is reward hacking)."""
    chats = [ChainMessages(task).draft(p) for p in test["prompt"]]
    return {
        name: float(
            np.mean(
                cached_scores(
                    cache_path, model["version"], model["model_dir"], chats * (len(texts) // len(chats)), texts
                )
            )
        )
        if texts
        else float("nan")
        for name, texts in answers.items()
    }


def _variants(
    context, task: str, checkpoints, student: LlamaCppLLM, trainer: LoRATrainer, settings: DscSettings
) -> tuple[dict[str, LlamaCppLLM], dict[str, list[str]]]:
    """The models to evaluate: the exported base, the packaged student (null control), every trained checkpoint (one
    per training seed: ``sft``, ``sft@seed1``, ...); and each method's seed models, first seed first."""
    version = content_hash("exported_base", trainer.settings_identity("export"), student.model_identity(), length=16)
    base = trainer.exported_base(settings.artifact_path("checkpoints", "base", version, "base.gguf"))
    variants = {"base": student.with_model(str(base)), "base_original": student}
    seeded: dict[str, list[str]] = {}
    for checkpoint in checkpoints:
        if len(checkpoint) and checkpoint["status"].iloc[0] == "trained":
            method = checkpoint["method"].iloc[0]
            seeds = checkpoint["seed"].tolist() if "seed" in checkpoint and checkpoint["seed"].notna().all() else [0]
            names = [method] + [f"{method}@seed{int(s)}" for s in seeds[1:]]
            seeded[method] = names[: len(checkpoint)]
            for name, gguf in zip(seeded[method], checkpoint["gguf_path"]):
                variants[name] = student.with_model(gguf)
        elif len(checkpoint):
            context.log.warning(
                f"{task}: {checkpoint['method'].iloc[0]} not evaluated ({checkpoint['status'].iloc[0]})"
            )
    return variants, seeded


def _by_method(answers: dict[str, list[str]], seeded: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every seed model's answers under its method's name, seed-major (each seed's block sample-major)."""
    merged = {name: texts for name, texts in answers.items() if "@seed" not in name}
    for method, names in seeded.items():
        merged[method] = [text for name in names for text in answers[name]]
    return merged


def _answer_all(context, task, variants: dict, test: pd.DataFrame, params, samples: int):
    """Every model's answers (texts, sample-major) and how many came from the cache."""
    prompts = test["prompt"].tolist()
    requests = [ChainMessages(task).draft(prompt) for prompt in prompts]
    seeded = [params.model_copy(update={"seed": params.seed + k}) for k in range(samples)]
    missing = {name: sum(llm.count_missing(requests, p) for p in seeded) for name, llm in variants.items()}
    context.log.info(
        f"{task.name} evaluation: {len(variants)} models x {len(prompts)} prompts x {samples} samples, "
        f"{sum(missing.values())} answers to generate ({', '.join(f'{n} {m}' for n, m in missing.items())})"
    )
    workers, threads = side_by_side(len(variants), variants["base_original"].n_threads)

    def answer(number: int, name: str) -> list:
        label = f"{task.name} evaluation, model {number}/{len(variants)} ({name})"
        progress = GenerationProgress(lambda line: context.log.info(f"{label}: {line}"), missing[name])
        llm = variants[name] if threads is None else variants[name].with_threads(threads)
        return _answers(llm, requests, seeded, progress)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evaluation") as pool:
        futures = {name: pool.submit(answer, n, name) for n, name in enumerate(variants, start=1)}
        generations = {name: future.result() for name, future in futures.items()}
    answers = {name: [g.text for g in answered] for name, answered in generations.items()}
    hits = sum(g.cached for answered in generations.values() for g in answered)
    context.log.info(f"{task.name}: {sum(map(len, answers.values()))} answers, {hits} from the cache")
    return answers, hits


def _answers(llm: LlamaCppLLM, requests: list, seeded: list, progress) -> list:
    """One seeded answer per request and sampling seed, sample-major: the first len(requests) are k = 0, the
    single-sample evaluation's own request; more seeds average out sampling noise per prompt. ``progress`` logs the
    rows generated as they land."""
    return [g for params in seeded for g in llm.chat_many(requests, params, on_generated=progress)]


def _rewards(scorer, prompts: list[str], answers: dict[str, list[str]], samples: int, seeded: dict[str, list[str]]):
    """One scorer's rewards of every model's answers: per prompt, or (seeds, prompts) for a method trained at several
    seeds (the samples' mean); and each answer's own, in answer order (for the rank correlation of two rewards)."""
    by_model, by_answer = {}, {}
    blocks = {name: len(texts) // len(prompts) if prompts else 0 for name, texts in answers.items()}  # seeds x samples
    pairs = [(p, t) for name, texts in answers.items() for p, t in zip(prompts * blocks[name], texts)]
    # One call for every model's answers: a judge then prefills each request's shared start once for all of them.
    flat = iter(scorer.score([p for p, _ in pairs], [t for _, t in pairs]) if pairs else [])
    for name in answers:
        scores = np.asarray([[next(flat) for _ in prompts] for _ in range(blocks[name])], dtype=float)
        by_answer[name] = scores.ravel()
        per_seed = scores.reshape(len(seeded.get(name, [name])), samples, -1).mean(axis=1)
        # one value per prompt (the bootstrap resamples prompts), or one per seed and prompt
        by_model[name] = per_seed[0] if len(per_seed) == 1 else per_seed
    return by_model, by_answer


CONTRASTS = [("almost_rl", "almost_sft"), ("sft", "placebo")]  # rows against another model than base


def _comparisons(rewards_by_model: dict[str, np.ndarray], seed: int, groups: list[str]) -> pd.DataFrame:
    """Every model against base (ALMoST's RL also against its SFT start, dSC's SFT against the placebo); intervals
    resample whole ``groups`` of prompts (the cluster bootstrap)."""
    table = evaluation_table(rewards_by_model, seed=seed, clusters=groups)
    for model, start in CONTRASTS:
        if {model, start} <= set(rewards_by_model):
            treated, control = rewards_by_model[model], rewards_by_model[start]
            if np.ndim(treated) != np.ndim(control):  # RL trains once, from its SFT's first seed
                control = control[0] if np.ndim(control) == 2 else control
                treated = treated[0] if np.ndim(treated) == 2 else treated
            row = evaluation_table({"base": control, model: treated}, seed=seed, clusters=groups).iloc[[1]]
            table = pd.concat([table, row.assign(model=f"{model} vs {start}")], ignore_index=True)
    return table


def _table(
    task,
    test: pd.DataFrame,
    answers: dict[str, list[str]],
    rewards: RewardModels,
    samples: int,
    seeded: dict[str, list[str]],
    second_scorer: Scorer | None = None,
):
    """Mean reward per model against base (and the contrasts); the per-prompt rewards, (seeds, prompts) for a method
    trained at several seeds. With a ``second_scorer``, its reward of the same answers beside the first (the same
    paired bootstrap), and the two rewards' Spearman correlation over each row's answers; ``second`` holds its
    per-prompt rewards (None without one)."""
    prompts, seed = test["prompt"].tolist(), task.spec.acceptance.seed
    rewards_by_model, first = _rewards(rewards.for_task(task.spec.scorer), prompts, answers, samples, seeded)
    groups = [task.groups.get(prompt_id, prompt_id) for prompt_id in test["prompt_id"]]
    table = _comparisons(rewards_by_model, seed, groups)
    words = {
        name: float(np.mean([len(t.split()) for t in texts])) if texts else np.nan for name, texts in answers.items()
    }
    table["mean_answer_words"] = table["model"].map(words)  # brevity can win a reward: length beside every row
    second = None
    if second_scorer is not None:  # the evaluation's alone: no data was selected by it
        second, by_answer = _rewards(rewards.for_task(second_scorer), prompts, answers, samples, seeded)
        table = add_second_reward(table, _comparisons(second, seed, groups))
        answers_of = lambda row: row.split(" vs ")  # noqa: E731  a contrast row: both models' answers
        table[SPEARMAN] = [
            rank_correlation(
                np.concatenate([first[m] for m in answers_of(row)]),
                np.concatenate([by_answer[m] for m in answers_of(row)]),
            )
            for row in table["model"]
        ]
    return table, rewards_by_model, second


def _guard_columns(
    table: pd.DataFrame,
    task: str,
    test: pd.DataFrame,
    answers: dict[str, list[str]],
    rewards_by_model: dict[str, np.ndarray],
    seed: int,
    second: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Every guard's rate per model, each job guard against base, and the per-prompt results (JSON; with the second
    reward's when the task has one)."""
    prompts, guards, job = test["prompt"].tolist(), {}, {}
    for name, texts in answers.items():
        blocks = len(texts) // len(prompts)  # samples, times seeds for a seeded method
        values = guard_values(prompts * blocks, texts)  # every guard once per answer
        guards[name] = rates_of(values)
        job[name] = {guard: per_prompt(values[guard], blocks) for guard in JOB_GUARDS}
    for column in next(iter(guards.values())):
        table[column] = table["model"].map({name: rates[column] for name, rates in guards.items()})
    add_guard_differences(table, job, seed)
    table.insert(2, "samples_per_prompt", len(answers["base"]) // len(prompts))
    table.insert(0, "task", task)
    ids = test["prompt_id"].tolist()
    per_prompt_mean = lambda values: np.mean(np.atleast_2d(values), axis=0)  # noqa: E731  over seeds
    table[PER_PROMPT] = table["model"].map(
        {
            name: per_prompt_json(
                ids,
                per_prompt_mean(rewards_by_model[name]),
                job[name],
                None if second is None else per_prompt_mean(second[name]),
            )
            for name in job
        }
    )
    return table


def evaluation_report(
    task,
    test: pd.DataFrame,
    markdown: str,
    answers: dict[str, list[str]],
    rewards_by_model: dict[str, np.ndarray],
    second: Scorer | None = None,
) -> str:
    """The evaluation as a markdown page: the table and the first three prompts' answers, model by model."""
    examples = "".join(
        f"\n### {test['prompt_id'].iloc[i]}: {test['prompt'].iloc[i]}\n\n"
        + "".join(
            f"- **{name}** ({np.mean(np.atleast_2d(rewards_by_model[name]), axis=0)[i]:.3f}): "
            f"{' '.join(texts[i].split())[:400]}\n"
            for name, texts in answers.items()
        )
        for i in range(min(3, len(test)))
    )
    scorers = task.spec.scorer.name + (f"; second scorer (never selects data): {second.name}" if second else "")
    return (
        f"# Evaluation: {task.name}\n\nScorer: {scorers}; {len(test)} held-out prompts; "
        f"differences are against the base student, 95% bootstrap intervals.\n\n{markdown}\n## Examples\n{examples}"
    )
