"""Distillation into the student (LoRA) and held-out evaluation.

Each checkpoint is a content-addressed folder (data hash + trainer settings): an identical request reuses the
folder instead of training again. The asset's table row points at it and carries the numbers a person checks.
"""

import json
import time
from typing import Any, Callable

import dagster as dg
import numpy as np
import pandas as pd

from dsc_assets.guards import JOB_GUARDS, guard_values, per_prompt, rates_of
from dsc_assets.assets import partition_task, version_metadata, system_message, user_message, sampling_params
from dsc_assets.versions import stage
from dsc_assets.plots import line_plot
from dsc_assets.report import PER_PROMPT, markdown_table
from dsc_assets.samples import data_version
from resources.hashing import content_hash
from resources.llm import LlamaCppLLM
from resources.rewards import RewardModels
from resources.settings import METHODS, DscSettings
from resources.trainer import LoRATrainer

CHECKPOINT_COLUMNS = [
    "task", "method", "status", "train_rows", "steps", "seconds", "first_loss", "last_loss", "data_hash", "adapter_dir",
    "merged_dir", "gguf_path",
]


def _dataset_records(df: pd.DataFrame) -> list[dict]:
    """The training records, read back from the versioned Hugging Face dataset folder the table points at."""
    if df.empty:
        return []
    from datasets import load_from_disk

    return load_from_disk(df["dataset_path"].iloc[0]).to_list()


def _train(
    context: dg.AssetExecutionContext, trainer: LoRATrainer, settings: DscSettings, method: str, records: list[dict],
    train: Callable[[Any, str], Any] | None = None,
) -> dg.Output[pd.DataFrame]:
    """Train (or reuse) one checkpoint folder and describe it in one table row."""
    from datasets import Dataset

    task = context.partition_key
    task_files = partition_task(context)
    versions = version_metadata(context, task_files)
    trainer = trainer.with_overrides(task_files.spec.trainer.overrides())  # task.yaml trainer: (preference losses only)
    data_hash = content_hash(records, length=16)
    version = content_hash(method, data_hash, trainer.settings_identity(method), length=16)
    folder = settings.artifact_path("checkpoints", method, task, version)
    row = {"task": task, "method": method, "train_rows": len(records), "data_hash": data_hash}
    off = method in METHODS and not settings.builds(method)
    if off or not records:
        status = "skipped: not in the profile's methods" if off else "skipped: empty dataset"
        (context.log.info if off else context.log.warning)(f"{task}: {method} checkpoint {status}")
        df = pd.DataFrame([{**row, "status": status, "steps": 0, "seconds": 0.0, "first_loss": np.nan,
                            "last_loss": np.nan, "adapter_dir": "", "merged_dir": "", "gguf_path": ""}],
                          columns=CHECKPOINT_COLUMNS)
        return dg.Output(df, data_version=data_version(df), metadata={"status": status, **versions})

    summary_file = folder / "summary.json"
    if summary_file.exists():  # same data, same settings: this checkpoint exists already
        summary = json.loads(summary_file.read_text())
        context.log.info(f"{task}: reusing {method} checkpoint {folder}")
    else:
        started = time.perf_counter()
        dataset = Dataset.from_list(records)
        if train is not None:  # ALMoST's SFT and RL bring their own training step
            result = train(dataset, str(folder))
        else:
            result = (trainer.train_sft(dataset, str(folder)) if method == "sft"
                      else trainer.train_dpo(dataset, str(folder), loss=method))
        gguf_path = folder / f"{task}-{method}.gguf"
        trainer.export_gguf(result.merged_dir, str(gguf_path))
        summary = {
            "steps": result.steps, "seconds": round(time.perf_counter() - started, 2), "losses": result.losses,
            "adapter_dir": str(result.adapter_dir), "merged_dir": str(result.merged_dir), "gguf_path": str(gguf_path),
        }
        summary_file.write_text(json.dumps(summary))  # written last: a killed run leaves no "finished" marker
    losses = summary["losses"]
    df = pd.DataFrame([{
        **row, "status": "trained", "steps": summary["steps"], "seconds": summary["seconds"],
        "first_loss": losses[0] if losses else np.nan, "last_loss": losses[-1] if losses else np.nan,
        "adapter_dir": summary["adapter_dir"], "merged_dir": summary["merged_dir"], "gguf_path": summary["gguf_path"],
    }], columns=CHECKPOINT_COLUMNS)
    metadata = {
        "path": dg.MetadataValue.path(str(folder)),
        "gguf": dg.MetadataValue.path(summary["gguf_path"]),
        "steps": dg.MetadataValue.int(summary["steps"]),
        "train_seconds": dg.MetadataValue.float(summary["seconds"]),
        "train_rows": dg.MetadataValue.int(len(records)),
        "data_hash": dg.MetadataValue.text(data_hash),
        "trainer": dg.MetadataValue.json(trainer.method_settings(method)),
        **versions,
    }
    if losses:
        metadata["loss_curve"] = line_plot(losses, f"{task} {method}: training loss", "step", "loss")
        metadata["first_loss"], metadata["last_loss"] = float(losses[0]), float(losses[-1])
    return dg.Output(df, data_version=dg.DataVersion(version), metadata=metadata)


def _checkpoint_asset(method: str, dataset_asset: str, description: str):
    @stage(name=f"{method}_checkpoint", group="training", layer="training", reads=(f"trainer.{method}", f"methods.{method}"),
           kinds=("pytorch", "duckdb"), description=description, ins={"dataset": dg.AssetIn(dataset_asset)})
    def _asset(
        context: dg.AssetExecutionContext, dataset: pd.DataFrame, trainer: LoRATrainer, settings: DscSettings
    ) -> dg.Output[pd.DataFrame]:
        return _train(context, trainer, settings, method, _dataset_records(dataset))

    return _asset


sft_checkpoint = _checkpoint_asset("sft", "sft_dataset", "dSC: LoRA supervised fine-tuning of the student on accepted revisions.")
dpo_checkpoint = _checkpoint_asset(
    "dpo", "dpo_dataset", "Baseline: plain DPO on the self-critique pairs (chosen = revision, rejected = draft)."
)
rdpo_checkpoint = _checkpoint_asset(
    "rdpo", "dpo_dataset",
    "rDPO: DPO whose label per pair is softened by the external reward, p = σ((s_chosen − s_rejected)/τ).",
)
dlma_checkpoint = _checkpoint_asset(
    "dlma", "dlma_pairs", "DLMA: DPO with the self-reward as a margin, L = −log σ(β·[h − γ·clamp(R, −40, 40)]).",
)


def bootstrap_ci(differences: np.ndarray, seed: int = 0, samples: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences."""
    if len(differences) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.choice(differences, size=(samples, len(differences)), replace=True).mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def evaluation_table(rewards_by_model: dict[str, np.ndarray], seed: int = 0) -> pd.DataFrame:
    """Mean reward per model; win rate and bootstrap 95% interval of the paired difference against ``base``."""
    base = rewards_by_model["base"]
    rows = []
    for model, rewards in rewards_by_model.items():
        differences = rewards - base
        low, high = bootstrap_ci(differences, seed=seed)
        wins = float(np.mean((differences > 0) + 0.5 * (differences == 0))) if len(rewards) else float("nan")
        rows.append({"model": model, "prompts": len(rewards), "mean_reward": float(np.mean(rewards)) if len(rewards) else float("nan"),
                     "difference_vs_base": float(np.mean(differences)) if len(rewards) else float("nan"),
                     "ci95_low": low, "ci95_high": high, "win_rate_vs_base": wins})
    return pd.DataFrame(rows)


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)  # full precision: a subset over every prompt is the table


def per_prompt_json(prompt_ids: list[str], rewards: np.ndarray, guards: dict[str, np.ndarray]) -> str:
    """One model's per-prompt results: the sample-mean reward and each job guard's per-prompt rate (null where the
    guard does not apply), aligned with ``prompt_ids``."""
    return json.dumps({"prompt_id": list(prompt_ids), "reward": [_number(v) for v in rewards],
                       **{guard: [_number(v) for v in values] for guard, values in guards.items()}})


def subset_table(evaluation: pd.DataFrame, keep: Callable[[str], bool], seed: int = 0) -> pd.DataFrame:
    """The evaluation's rows recomputed over the test prompts ``keep`` accepts (from the ``per_prompt`` column):
    prompts, mean reward, difference from ``base`` with its 95% bootstrap interval, win rate, and each job guard
    against base. Empty when no prompt is kept; ValueError when the table has no per-prompt results."""
    if PER_PROMPT not in evaluation.columns or evaluation[PER_PROMPT].isna().all():
        raise ValueError("the evaluation table has no per-prompt results (written before they were recorded): "
                         "materialize `evaluation` again")
    parsed = {row.model: json.loads(row.per_prompt) for row in evaluation.itertuples() if isinstance(row.per_prompt, str)}
    if "base" not in parsed:
        raise ValueError("the evaluation table has no per-prompt results for `base`")
    ids = parsed["base"]["prompt_id"]
    mask = np.array([keep(prompt_id) for prompt_id in ids], dtype=bool)
    if not mask.any():
        return pd.DataFrame()
    as_array = lambda values: np.array([np.nan if v is None else v for v in values], dtype=float)[mask]  # noqa: E731
    table = evaluation_table({model: as_array(data["reward"]) for model, data in parsed.items()}, seed=seed)
    guards = {model: {g: as_array(data[g]) for g in JOB_GUARDS if g in data} for model, data in parsed.items()}
    add_guard_differences(table, guards, seed)
    return table


def add_guard_differences(table: pd.DataFrame, guards: dict[str, dict[str, np.ndarray]], seed: int) -> None:
    """``<guard>_vs_base`` for each job guard ``base`` has: each model's per-prompt guard rates against the base's,
    paired over prompts ("not worse" is an interval that reaches 0); rows of models without rates stay empty."""
    for guard in JOB_GUARDS:
        if guard in guards["base"]:
            versus = {name: guard_difference(rates[guard], guards["base"][guard], seed) for name, rates in guards.items()}
            table[f"{guard}_vs_base"] = table["model"].map(versus)


def guard_difference(model: np.ndarray, base: np.ndarray, seed: int) -> str:
    """Mean per-prompt difference of a guard's rate from the base's, with its 95% bootstrap interval, over the
    prompts where the guard applies ("" where it applies to none)."""
    both = ~np.isnan(model) & ~np.isnan(base)
    if not both.any():
        return ""
    differences = model[both] - base[both]
    low, high = bootstrap_ci(differences, seed=seed)
    return f"{differences.mean():+.3f} [{low:+.3f}, {high:+.3f}]"


def exported_base(trainer: LoRATrainer, settings: DscSettings, student: LlamaCppLLM) -> LlamaCppLLM:
    """The untrained student passed through the checkpoints' export path (dequantized, fine-tuned weights written
    in F16): the base every checkpoint is compared with, so export precision is not mistaken for training."""
    version = content_hash("exported_base", trainer.settings_identity("export"), student.model_identity(), length=16)
    path = settings.artifact_path("checkpoints", "base", version, "base.gguf")
    if not path.exists():
        trainer.export_gguf(str(trainer.base_dir()), str(path))  # atomic: written to .partial, then renamed
    return LlamaCppLLM(cache_path=student.cache_path, model=str(path), model_cache_dir=student.model_cache_dir,
                       n_ctx=student.n_ctx, n_threads=student.n_threads, batch_size=student.batch_size)


@stage(group="evaluation", layer="training", revision=4, reads=("task.system_prompt", "sampling", "task.scorer", "scorer_model",
                                                       "task.acceptance.seed", "student", "trainer.export",
                                                       "eval_samples_per_prompt"))
def evaluation(
    context: dg.AssetExecutionContext,
    raw_prompts: pd.DataFrame,
    sft_checkpoint: pd.DataFrame,
    dpo_checkpoint: pd.DataFrame,
    rdpo_checkpoint: pd.DataFrame,
    dlma_checkpoint: pd.DataFrame,
    almost_sft_checkpoint: pd.DataFrame,
    almost_rl_checkpoint: pd.DataFrame,
    reward_model: pd.DataFrame,
    student: LlamaCppLLM,
    rewards: RewardModels,
    trainer: LoRATrainer,
    settings: DscSettings,
) -> dg.Output[pd.DataFrame]:
    """Held-out evaluation: the base student and every trained checkpoint answer the test prompts (through the
    cached LLM resource, seeded), the task's reward scores them; mean reward, win rate against base and a bootstrap
    95% interval of the difference, as a table, a markdown report file and metadata. ALMoST's RL checkpoint is also
    compared with its SFT starting point, and every model's mean ALMoST reward-model score stands beside the
    external reward (a reward-model score that rises while the external reward does not is reward hacking).

    ``base`` is the untrained student served through the same export path as the checkpoints; ``base_original``,
    the packaged quantized student, is the null control: its difference from ``base`` is what export precision
    alone does, and an interval around it that excludes zero means the comparison is not to be trusted.

    ``per_prompt`` holds each model's per-prompt reward and job-guard rates (JSON), so a report can recompute the
    table over a subset of the test prompts (``dsc report --prompts``) without a model call."""
    task = partition_task(context)
    test = raw_prompts[raw_prompts["split"] == "test"]
    params = sampling_params(task, settings)
    scorer = rewards.for_task(task.spec.scorer)
    requests = [[system_message(task), user_message(prompt)] for prompt in test["prompt"]]
    variants = {"base": exported_base(trainer, settings, student), "base_original": student}
    for checkpoint in (sft_checkpoint, dpo_checkpoint, rdpo_checkpoint, dlma_checkpoint, almost_sft_checkpoint,
                       almost_rl_checkpoint):
        if len(checkpoint) and checkpoint["status"].iloc[0] == "trained":
            variants[checkpoint["method"].iloc[0]] = LlamaCppLLM(
                cache_path=student.cache_path, model=checkpoint["gguf_path"].iloc[0],
                model_cache_dir=student.model_cache_dir, n_ctx=student.n_ctx, n_threads=student.n_threads,
                batch_size=student.batch_size,
            )
        elif len(checkpoint):
            context.log.warning(f"{task.name}: {checkpoint['method'].iloc[0]} not evaluated ({checkpoint['status'].iloc[0]})")
    samples, prompts = settings.eval_samples_per_prompt, test["prompt"].tolist()
    answers, rewards_by_model, guards, job = {}, {}, {}, {}
    for name, llm in variants.items():
        # k = 0 is the single-sample evaluation's own request; more seeds average out sampling noise per prompt
        per_sample = [[g.text for g in llm.chat_many(requests, params.model_copy(update={"seed": params.seed + k}))]
                      for k in range(samples)]
        answers[name] = [text for texts in per_sample for text in texts]  # sample-major: the first len(test) are k=0
        scores = np.asarray([scorer.score(prompts, texts) for texts in per_sample], dtype=float).reshape(samples, -1)
        rewards_by_model[name] = scores.mean(axis=0)  # one value per prompt: the bootstrap resamples prompts
        values = guard_values(prompts * samples, answers[name])  # every guard once per answer
        guards[name] = rates_of(values)
        job[name] = {guard: per_prompt(values[guard], samples) for guard in JOB_GUARDS}
    table = evaluation_table(rewards_by_model, seed=task.spec.acceptance.seed)
    if {"almost_sft", "almost_rl"} <= set(rewards_by_model):
        rl_vs_sft = evaluation_table({"base": rewards_by_model["almost_sft"], "almost_rl": rewards_by_model["almost_rl"]},
                                     seed=task.spec.acceptance.seed).iloc[[1]].assign(model="almost_rl vs almost_sft")
        table = pd.concat([table, rl_vs_sft], ignore_index=True)
    model = reward_model.iloc[0] if len(reward_model) else None
    if model is not None and model["status"] == "trained":
        from dsc_assets.almost import rm_scores

        chats = [[system_message(task), user_message(p)] for p in prompts] * samples
        rm_means = {name: float(np.mean(rm_scores(student.cache_path, model, chats, texts))) if texts else float("nan")
                    for name, texts in answers.items()}
        table["reward_model_score"] = table["model"].map(rm_means)
    for column in next(iter(guards.values())):
        table[column] = table["model"].map({name: rates[column] for name, rates in guards.items()})
    add_guard_differences(table, job, task.spec.acceptance.seed)
    table.insert(2, "samples_per_prompt", samples)
    table.insert(0, "task", task.name)
    ids = test["prompt_id"].tolist()
    table[PER_PROMPT] = table["model"].map({name: per_prompt_json(ids, rewards_by_model[name], job[name]) for name in job})
    markdown = markdown_table(table.drop(columns=["task", PER_PROMPT]))
    report = settings.artifact_path("reports", task.name, "evaluation.md")
    report.parent.mkdir(parents=True, exist_ok=True)
    examples = "".join(
        f"\n### {test['prompt_id'].iloc[i]}: {test['prompt'].iloc[i]}\n\n"
        + "".join(f"- **{name}** ({rewards_by_model[name][i]:.3f}): {' '.join(texts[i].split())[:400]}\n" for name, texts in answers.items())
        for i in range(min(3, len(test)))
    )
    report.write_text(f"# Evaluation: {task.name}\n\nScorer: {task.spec.scorer.name}; {len(test)} held-out prompts; "
                      f"differences are against the base student, 95% bootstrap intervals.\n\n{markdown}\n## Examples\n{examples}")
    context.log.info(f"{task.name} evaluation:\n{markdown}")
    return dg.Output(
        table, data_version=data_version(table),
        metadata={"evaluation": dg.MetadataValue.md(markdown), "report": dg.MetadataValue.path(str(report)),
                  "test_prompts": dg.MetadataValue.int(len(test)), **version_metadata(context, task)},
    )
