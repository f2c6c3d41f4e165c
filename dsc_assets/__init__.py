"""dsc: the asset graph (what). Resources (how) live in the sibling package ``resources``."""

import warnings

import dagster as dg

# Output(data_version=...) is what keeps identical output from making downstream stale; Dagster labels it beta.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*data_version.*")
