"""The dlma group: its assets and their checks."""

from dsc_assets.defs.dlma import assets, checks  # noqa: F401  (definitions.py loads both)
