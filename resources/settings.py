"""Run-size settings as a resource, so a profile (not code) decides how much data a run touches."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

# Every method the graph can build; a profile's `methods` picks some. ``placebo`` is a control, not a method: SFT on
# the teacher's unrevised drafts of the prompts dSC's SFT trains on (same count, same recipe), which separates what
# critique and revision add from "more teacher text". It costs one more training and evaluation, so a profile asks
# for it (the study does); every other method is on by default.
METHODS = ("sft", "dpo", "rdpo", "dlma", "almost", "placebo")
DEFAULT_METHODS = ("sft", "dpo", "rdpo", "dlma", "almost")
# The trainings a profile's training seeds repeat (ALMoST's RL starts from its SFT's first seed and is trained once).
SEEDED = ("sft", "dpo", "rdpo", "dlma", "almost_sft", "placebo")


class DscSettings(dg.ConfigurableResource):
    """How much of each task a run uses, and where files (datasets, checkpoints) go: set by the profile."""

    max_prompts_per_task: int | None = Field(
        default=None, description="First N train-split prompts of each task (None: all)."
    )
    max_eval_prompts_per_task: int | None = Field(
        default=None, description="First N prompts of the evaluated split of each task (None: all)."
    )
    eval_split: str = Field(
        default="test",
        description="The split the evaluation answers: test (the study's; each evaluation is written to the ledger) "
        "or dev (where settings and ablations are chosen).",
    )
    eval_samples_per_prompt: int = Field(
        default=1, description="Seeded samples per test prompt in the evaluation; rewards are averaged per prompt."
    )
    max_tokens_cap: int | None = Field(default=None, description="Upper bound on every task's max_tokens.")
    methods: list[str] = Field(
        default_factory=lambda: list(DEFAULT_METHODS),
        description="Methods this profile builds (sft, dpo, rdpo, dlma, almost, placebo); the others' assets write no "
        "rows and their checkpoints are skipped.",
    )
    training_seeds: int = Field(
        default=1, ge=1, description="Trainings per checkpoint, at trainer seeds seed, seed + 1, ... (SEEDED methods)."
    )
    training_seeds_by_task: dict[str, int] = Field(
        default_factory=dict, description="training_seeds for some tasks (e.g. 3 on sentiment and privacy)."
    )
    second_scorers: dict[str, str] = Field(
        default_factory=dict,
        description="Task -> the evaluation's second reward (a scorer as JSON), in place of task.yaml's second_scorer.",
    )
    quality_overrides: dict[str, float] = Field(
        default_factory=dict,
        description="Profile-wide overrides of every task's quality thresholds (and min/max_acceptance_rate).",
    )
    artifacts_dir: str = Field(default=".dsc/artifacts", description="Versioned datasets and checkpoints live here.")
    profile: str = Field(default="", description="The profile's name and content hash, for the ledger.")
    profile_sha: str = Field(default="")
    ledger_path: str = Field(
        default=".dsc/ledger.jsonl", description="Where each evaluation of the test split is recorded (lib/ledger.py)."
    )

    def builds(self, method: str) -> bool:
        """Whether this profile builds ``method`` (one of METHODS)."""
        return method in self.methods

    def seeds_for(self, task: str) -> int:
        """How many training seeds ``task``'s seeded checkpoints train."""
        return self.training_seeds_by_task.get(task, self.training_seeds)

    def artifact_path(self, *parts: str) -> Path:
        return Path(self.artifacts_dir).joinpath(*parts)
