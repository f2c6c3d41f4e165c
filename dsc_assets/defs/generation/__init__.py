"""The generation group: its assets and their checks."""

from dsc_assets.defs.generation import assets, checks  # noqa: F401  (definitions.py loads both)
