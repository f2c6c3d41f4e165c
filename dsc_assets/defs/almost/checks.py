"""ALMoST's blocking checks."""

from dsc_assets.defs.almost import assets
from dsc_assets.defs.checks import quality_check

almost_responses_quality = quality_check(
    assets.almost_responses, "ALMoST answers: every configuration per prompt, teacher answers not empty."
)
synthetic_comparisons_quality = quality_check(
    assets.synthetic_comparisons, "ALMoST comparisons: kept train-fold pairs that differ."
)
rmsp_demonstrations_quality = quality_check(
    assets.rmsp_demonstrations, "Best-of-N: the best-scored candidate kept, not empty."
)
