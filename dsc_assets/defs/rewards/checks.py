"""The rewards group's blocking checks."""

from dsc_assets.defs.checks import quality_check
from dsc_assets.defs.rewards import assets

reward_scores_quality = quality_check(assets.reward_scores, "Rewards: present and within the scorer's range.", True)
accepted_samples_quality = quality_check(assets.accepted_samples, "Acceptance rate within the task's band.")
preference_pairs_quality = quality_check(assets.preference_pairs, "Pairs: chosen differs from rejected.")
