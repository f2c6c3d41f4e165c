"""The generation group's blocking checks: each table's quality suite, and every prompt fits its context windows."""

import dagster as dg

from dsc_assets.defs.checks import quality_check
from dsc_assets.defs.generation import assets
from dsc_assets.defs.partitions import task_partitions
from dsc_assets.defs.steps import partition_task
from dsc_assets.lib.context_window import Window, context_problems, token_counter
from dsc_assets.lib.leaks import cross_split_links
from dsc_assets.lib.profiles import profile_file
from resources.llm import LlamaCppLLM, LLMResource
from resources.models import resolve_model
from resources.rewards import RewardModels
from resources.settings import DscSettings

raw_prompts_quality = quality_check(
    assets.raw_prompts, "Prompts: columns, unique ids, train/test split with train rows."
)
drafts_quality = quality_check(assets.drafts, "Drafts: present, not empty, no prompt echo, no loops, few duplicates.")
critiques_quality = quality_check(
    assets.critiques, "Critiques: no echo of the draft or the critique template, no loops."
)
revisions_quality = quality_check(
    assets.revisions, "Revisions: not empty, no echo of the prompt/draft/critique or templates."
)


@dg.asset_check(
    asset=assets.raw_prompts,
    name="raw_prompts_fit_context",
    blocking=True,
    partitions_def=task_partitions,
    description="Every prompt fits the context windows it meets (generator, judge, student), counted with "
    "each model's tokenizer: a prompt that cannot fit stops the run before the first model call.",
)
def raw_prompts_fit_context(
    context: dg.AssetCheckExecutionContext,
    llm: LLMResource,
    rewards: RewardModels,
    student: LlamaCppLLM,
    settings: DscSettings,
) -> dg.AssetCheckResult:
    task = partition_task(context)
    windows = [
        Window(
            "judge",
            rewards.n_ctx,
            token_counter(resolve_model(rewards.judge_model, rewards.model_cache_dir).path),
            "judge.n_ctx",
        ),
        Window("student", student.n_ctx, token_counter(student.model_file().path), "student.n_ctx"),
    ]
    if isinstance(llm, LlamaCppLLM):  # a server's tokenizer is not known here
        windows.insert(0, Window("generator", llm.n_ctx, token_counter(llm.model_file().path), "generator.n_ctx"))
    max_tokens = task.sampling_for(settings.max_tokens_cap).max_tokens
    problems = [p for window in windows for p in context_problems(task, window, max_tokens, str(profile_file()))]
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=problems[0] if problems else f"every prompt fits ({', '.join(w.field for w in windows)})",
        metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none")},
    )


@dg.asset_check(
    asset=assets.raw_prompts,
    name="raw_prompts_no_leak_across_splits",
    blocking=True,
    partitions_def=task_partitions,
    description="No two linked prompts (one declared group, near-duplicate wording with names masked, or a shared "
    "multi-word name: lib/leaks.py) are in different splits: a test prompt with a training twin measures memory, "
    "not alignment. Fix: `split: {group_by: linked}` in the task.yaml, or a shared `group` on both lines.",
)
def raw_prompts_no_leak_across_splits(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    task = partition_task(context)
    leaks = cross_split_links(task.prompts, task.split_of, task.links)
    lines = [
        f"{task.folder / 'prompts.jsonl'}:{task.lines.get(link.first, '?')} '{link.first}' ({first}) and line "
        f"{task.lines.get(link.second, '?')} '{link.second}' ({second}): {link.reason}"
        for link, first, second in leaks
    ]
    groups = len(set(task.groups.values()))
    return dg.AssetCheckResult(
        passed=not leaks,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(leaks)} linked pair(s) cross splits; first: {lines[0]}"
            if leaks
            else f"no linked prompts cross splits ({len(task.prompts)} prompts in {groups} groups)"
        ),
        metadata={
            "leaks": dg.MetadataValue.md("\n".join(f"- {line}" for line in lines[:50]) or "none"),
            "groups": dg.MetadataValue.int(groups),
        },
    )
