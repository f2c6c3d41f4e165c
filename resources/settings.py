"""Run-size settings as a resource, so a profile (not code) decides how much data a run touches."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class DscSettings(dg.ConfigurableResource):
    """How much of each task a run uses: set by the profile."""

    max_prompts_per_task: int | None = Field(default=None, description="First N prompts of each task (None: all).")
    max_tokens_cap: int | None = Field(default=None, description="Upper bound on every task's max_tokens.")
