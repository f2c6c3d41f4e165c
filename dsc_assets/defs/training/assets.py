"""Distillation into the student (LoRA): dSC's SFT, DPO, rDPO, DLMA and the placebo control, one checkpoint asset
each.

Each checkpoint is a content-addressed folder (data hash + trainer settings): an identical request reuses the
folder instead of training again. The asset's table row points at it and carries the numbers a person checks.
"""

import dagster as dg
import pandas as pd

from dsc_assets.defs.stage import stage
from dsc_assets.defs.training.checkpoint import checkpoint_output, dataset_records
from resources.settings import DscSettings
from resources.trainer import LoRATrainer


def _checkpoint_asset(method: str, dataset_asset: str, description: str):
    @stage(
        name=f"{method}_checkpoint",
        group="training",
        reads=(f"trainer.{method}", f"methods.{method}", "training_seeds"),
        kinds=("pytorch", "duckdb"),
        description=description,
        ins={"dataset": dg.AssetIn(dataset_asset)},
    )
    def _asset(
        context: dg.AssetExecutionContext, dataset: pd.DataFrame, trainer: LoRATrainer, settings: DscSettings
    ) -> dg.Output[pd.DataFrame]:
        return checkpoint_output(context, trainer, settings, method, dataset_records(dataset))

    return _asset


sft_checkpoint = _checkpoint_asset(
    "sft", "sft_dataset", "dSC: LoRA supervised fine-tuning of the student on accepted revisions."
)
dpo_checkpoint = _checkpoint_asset(
    "dpo", "dpo_dataset", "Baseline: plain DPO on the self-critique pairs (chosen = revision, rejected = draft)."
)
rdpo_checkpoint = _checkpoint_asset(
    "rdpo",
    "dpo_dataset",
    "rDPO: DPO whose label per pair is softened by the external reward, p = σ((s_chosen − s_rejected)/τ).",
)
dlma_checkpoint = _checkpoint_asset(
    "dlma",
    "dlma_pairs",
    "DLMA: DPO with the self-reward as a margin, L = −log σ(β·[h − γ·clamp(R, −40, 40)]).",
)
placebo_checkpoint = _checkpoint_asset(
    "placebo",
    "placebo_dataset",
    "Placebo control: SFT's recipe on the teacher's unrevised drafts of SFT's prompts (what more teacher text does "
    "without critique and revision).",
)
