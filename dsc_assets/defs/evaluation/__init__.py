"""The evaluation group: its assets and their checks."""

from dsc_assets.defs.evaluation import assets  # noqa: F401  (definitions.py loads it)
