"""The rewards group: its assets and their checks."""

from dsc_assets.defs.rewards import assets, checks  # noqa: F401  (definitions.py loads both)
