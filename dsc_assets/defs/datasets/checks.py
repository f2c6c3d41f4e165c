"""The training sets' blocking checks."""

from dsc_assets.defs.checks import quality_check
from dsc_assets.defs.datasets import assets

dlma_pairs_quality = quality_check(
    assets.dlma_pairs, "DLMA set: positive self-reward, dataset folder loads with all rows."
)
sft_dataset_quality = quality_check(assets.sft_dataset, "SFT set: system/user/assistant rows, dataset folder loads.")
placebo_dataset_quality = quality_check(
    assets.placebo_dataset, "Placebo set: the drafts of SFT's prompts as system/user/assistant rows, folder loads."
)
dpo_dataset_quality = quality_check(assets.dpo_dataset, "DPO set: columns, scores present, dataset folder loads.")
