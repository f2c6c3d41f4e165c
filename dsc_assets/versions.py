"""What each asset reads, in one table: the basis of code versions (Dagster, per asset) and task versions (dsc,
per asset and task), so that editing one task's revision template makes exactly that task's revisions stale.

Dagster's code version belongs to an asset, not to a partition, so it hashes the fields over every task; each
materialization also records ``task_version``, the same hash for its own task only, which ``dsc plan`` compares.
"""

from __future__ import annotations

from dsc_assets.tasks import TaskError, TaskSpec, load_task_spec, task_names
from resources.hashing import content_hash

# asset -> (logic revision: bump when the asset's code changes what it writes, task.yaml fields it reads)
READS: dict[str, tuple[int, tuple[str, ...]]] = {
    "raw_prompts": (1, ("split",)),
    "drafts": (1, ("system_prompt", "sampling")),
    "critiques": (1, ("system_prompt", "critique_template", "sampling")),
    "revisions": (1, ("system_prompt", "critique_template", "revision_template", "revision_steps", "sampling")),
    "reward_scores": (1, ("scorer",)),
    "accepted_samples": (1, ("acceptance",)),
    "preference_pairs": (1, ()),
    "contrastive_pairs": (1, ("system_prompt", "contrastive", "sampling")),
    "self_reward_scores": (1, ("system_prompt", "contrastive")),
    "dlma_pairs": (1, ("system_prompt",)),
    "sft_dataset": (1, ("system_prompt",)),
    "dpo_dataset": (1, ("system_prompt",)),
    "sft_checkpoint": (1, ()),
    "dpo_checkpoint": (1, ()),
    "rdpo_checkpoint": (1, ()),
    "dlma_checkpoint": (1, ()),
    "evaluation": (1, ("system_prompt", "sampling", "scorer")),
}


def task_version(asset: str, spec: TaskSpec, *context: object) -> str:
    """Version of one asset for one task: its logic, the fields it reads, and any run context (model, caps)."""
    logic, fields = READS[asset]
    return content_hash(asset, logic, spec.version_of(*fields), list(context), length=16)


def code_version(asset: str) -> str:
    """Dagster's (asset-wide) code version: the task versions of every task folder."""
    versions = []
    for name in task_names():
        try:
            versions.append((name, task_version(asset, load_task_spec(name))))
        except TaskError:
            versions.append((name, "invalid"))  # the run itself reports what is wrong
    return content_hash(asset, READS[asset][0], versions, length=16)


GENERATION_ASSETS = {"drafts", "critiques", "revisions", "contrastive_pairs"}


def run_context(asset: str, task, settings, llm=None) -> tuple:
    """What besides task.yaml decides an asset's output: the prompts and caps for raw_prompts; the model and the
    effective sampling parameters for generation."""
    if asset == "raw_prompts":
        return (task.prompts_file_version, settings.max_prompts_per_task, settings.max_eval_prompts_per_task)
    if asset in GENERATION_ASSETS and llm is not None:
        return (llm.model_identity(), task.sampling_for(settings.max_tokens_cap).model_dump(mode="json"))
    return ()
