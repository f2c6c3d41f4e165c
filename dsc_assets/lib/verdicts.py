"""The verdicts the evaluation's tables print: a 95% interval against 0, and the second reward's (no member of the
Holm family), with the note that says what the second reward's columns are."""

from __future__ import annotations

import math


def interval_verdict(low: float, high: float) -> str:
    """A closed interval: one that ends at 0 still contains it."""
    if math.isnan(low) or math.isnan(high):
        return "no interval"
    return "excludes 0" if low > 0 or high < 0 else "contains 0"


def second_verdict(low: float, high: float) -> str:
    """The second reward's verdict from its 95% interval alone (it is no member of the Holm family)."""
    verdict = interval_verdict(low, high)
    return verdict if verdict != "excludes 0" else ("higher, excludes 0" if low > 0 else "lower, excludes 0")


def second_reward_note(second) -> str:
    """What the ``second_`` columns are."""
    name = f"`{second.name}`" if second is not None else "the task's second scorer"
    return (
        f"The `second_` columns are the second reward ({name}), which never selected data: the same answers, the same "
        "paired bootstrap; `second_verdict` reads its 95% interval alone (Holm adjusts the first reward's family "
        "only). `rewards_spearman` is the rank correlation of the two rewards over each row's answers."
    )
