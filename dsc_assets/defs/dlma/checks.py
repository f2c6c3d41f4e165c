"""The DLMA group's blocking checks."""

from dsc_assets.defs.checks import quality_check
from dsc_assets.defs.dlma import assets

contrastive_pairs_quality = quality_check(
    assets.contrastive_pairs, "DLMA answers: not empty, no prompt echo, no loops."
)
self_reward_scores_quality = quality_check(
    assets.self_reward_scores, "DLMA self-rewards: columns, one per prompt, none null."
)
