"""The ledger: every evaluation on the test split, one JSON line each, so a second look at test is visible.

The evaluation appends to ``$DSC_HOME/ledger.jsonl`` whenever it answers the test split (profile ``eval_split:
test``); ``dsc report`` copies the home's lines it has not seen into ``reports/ledger.jsonl``, which is committed
with the reports. A reader counts the looks per task and profile there; settings are chosen on dev, where nothing is
counted.
"""

from __future__ import annotations

import datetime
import fcntl
import json
from pathlib import Path

FILE = "ledger.jsonl"


def record(path: Path, **entry) -> dict:
    """Append one look at test (``entry``: task, profile, profile_sha, commit, run_id, models, prompts, samples),
    dated now in UTC, under a lock: two evaluations ending together both land, whole."""
    line = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **entry}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        out.write(json.dumps(line, sort_keys=True) + "\n")
    return line


def entries(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def merge(source: Path, target: Path) -> int:
    """Append to ``target`` the lines of ``source`` it does not hold yet (by run and task); how many were new."""
    have = {(e.get("run_id"), e.get("task")) for e in entries(target)}
    new = [e for e in entries(source) if (e.get("run_id"), e.get("task")) not in have]
    if new:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="utf-8") as out:
            fcntl.flock(out, fcntl.LOCK_EX)
            out.writelines(json.dumps(e, sort_keys=True) + "\n" for e in new)
    return len(new)


def looks(path: Path, task: str) -> list[dict]:
    """The ledger's looks at one task's test split, oldest first."""
    return [e for e in entries(path) if e.get("task") == task]


def report_lines(task: str, split: str, ledger_path: Path | None) -> list[str]:
    """What a report says of its split: dev is no result; test, with the looks the ledger holds for the task."""
    if split != "test":
        return [f"Evaluated on the **{split}** split: where settings are chosen; not a result to report.", ""]
    if ledger_path is None:
        return ["Evaluated on the **test** split.", ""]
    seen = looks(ledger_path, task)
    profiles = sorted({f"`{e.get('profile')}` ({e.get('profile_sha')})" for e in seen})
    return [
        f"Evaluated on the **test** split. The ledger (`{ledger_path.name}`) holds {len(seen)} look(s) at this task's "
        f"test split" + (f", by {', '.join(profiles)}" if profiles else "") + ".",
        "",
    ]
