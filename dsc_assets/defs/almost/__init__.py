"""The almost group: its assets and their checks."""

from dsc_assets.defs.almost import assets, checks  # noqa: F401  (definitions.py loads both)
