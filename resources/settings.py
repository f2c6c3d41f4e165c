"""Run-size settings as a resource, so a profile (not code) decides how much data a run touches."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

# Every method the graph can build; a profile's `methods` picks some (the study leaves the costly branches out).
METHODS = ("sft", "dpo", "rdpo", "dlma", "almost")


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
        default_factory=lambda: list(METHODS),
        description="Methods this profile builds (sft, dpo, rdpo, dlma, almost); the others' assets write no rows "
        "and their checkpoints are skipped.",
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

    def artifact_path(self, *parts: str) -> Path:
        return Path(self.artifacts_dir).joinpath(*parts)
