"""The checkpointed methods, named once: each trains LoRA checkpoints into a table ``<method>_checkpoint`` (one row
per training seed), which the report, its settings and diagnostics sections, and provenance all read."""

from __future__ import annotations

CHECKPOINTED = ("sft", "dpo", "rdpo", "dlma", "almost_sft", "almost_rl", "placebo")
CHECKPOINT_TABLES = [f"{method}_checkpoint" for method in CHECKPOINTED]
