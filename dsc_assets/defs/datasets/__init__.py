"""The datasets group: its assets and their checks."""

from dsc_assets.defs.datasets import assets, checks  # noqa: F401  (definitions.py loads both)
