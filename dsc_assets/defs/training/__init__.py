"""The training group: its assets and their checks."""

from dsc_assets.defs.training import assets  # noqa: F401  (definitions.py loads it)
