"""Choosing a task's split seed by the sizes it gives, never by a result.

    python -m dsc_assets.lib.splits <task> [64,20,40]   # train, dev, test minimums

prints train / dev / test sizes for split seeds 0-19 under the task's fractions and grouping, and names the first seed
whose sizes meet the minimums with no group holding more than 15% of dev or test (prompts of one group are not
independent). That seed goes into the task.yaml's ``split.seed``.
"""

from __future__ import annotations

import sys
from collections import Counter

from dsc_assets.lib.tasks import load_task

MAX_GROUP_SHARE = 0.15  # a split seed is usable when no group is more than this share of dev or test


def seed_sizes(task_name: str, minimums: tuple[int, int, int], seeds: int = 20) -> int | None:
    """Print train/dev/test sizes for split seeds 0..seeds-1 of a task (its task.yaml fractions and grouping);
    return the first seed whose sizes meet ``minimums`` (train, dev, test), or None."""
    task = load_task(task_name)
    first = None
    for seed in range(seeds):
        task.spec.split.seed = seed
        splits = {p.id: task.split_of(p.id) for p in task.prompts}
        sizes = Counter(splits.values())
        counts = (sizes["train"], sizes["dev"], sizes["test"])
        # prompts of one group are not independent: no group may be more than MAX_GROUP_SHARE of a held-out split
        share = max(
            (
                n / sizes[split]
                for (split, _), n in Counter((splits[i], g) for i, g in task.groups.items()).items()
                if split != "train"
            ),
            default=0.0,
        )
        meets = all(c >= m for c, m in zip(counts, minimums)) and share <= MAX_GROUP_SHARE
        first = seed if meets and first is None else first
        print(
            f"seed {seed:2d}: train {counts[0]:3d}, dev {counts[1]:3d}, test {counts[2]:3d}, largest held-out group "
            f"{share:.0%}{'  ok' if meets else ''}"
        )
    print(
        f"first seed meeting train >= {minimums[0]}, dev >= {minimums[1]}, test >= {minimums[2]}, no held-out group "
        f"over {MAX_GROUP_SHARE:.0%}: {first}"
    )
    return first


if __name__ == "__main__":
    minimums = tuple(int(x) for x in sys.argv[2].split(",")) if len(sys.argv) > 2 else (64, 20, 40)
    sys.exit(0 if len(sys.argv) > 1 and seed_sizes(sys.argv[1], minimums) is not None else 1)
