"""Incremental rebuilds: what `dsc refresh` costs after a change, as ratios against a full run, in one run.

    python bench/incremental.py [--prompts 16] [--added 2] [--max-tokens 48]

Builds the data graph (raw_prompts → drafts → critiques → revisions → reward_scores → accepted_samples →
preference_pairs) for two tasks, sentiment and sycophancy, with the 135M model in a fresh DSC_HOME, then measures:

  full              both tasks from nothing (the reference: 100%)
  no-op refresh     nothing changed (goal: <= 5% of the full run's time, 0 model calls)
  edit revision     one task's revision template edited (goal: 0 drafts and critiques regenerated; only that
                    task's revisions and what follows)
  k new prompts     k prompts added to one task's n (goal: cost ≈ k/n of that task's full run)
  kill and resume   `dsc refresh` killed with SIGKILL mid-`drafts`, then run again (goal: calls of the rerun ==
                    rows not finished before the kill; at most the rows in flight are lost)

Every scenario but the last runs in this process through `dsc_assets.cli.main`, so interpreter start-up and
imports (printed separately) count for none of them; kill-and-resume needs separate processes and is measured in
model calls. Model calls are counted in the call cache (one row per call ever made).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASKS = ("sentiment", "sycophancy")
SELECT = "raw_prompts,drafts,critiques,revisions,reward_scores,accepted_samples,preference_pairs"


def write_profile(path: Path, prompts: int, max_tokens: int) -> None:
    base = (ROOT / "profiles" / "test.yaml").read_text()
    lines = [line for line in base.splitlines() if not line.startswith(("max_prompts_per_task", "max_tokens_cap"))]
    lines += [f"max_prompts_per_task: {prompts}", f"max_tokens_cap: {max_tokens}"]
    path.write_text("\n".join(lines) + "\n")


def train_prompts(task_dir: Path, name: str, count: int, offset: int = 0) -> list[str]:
    """`count` prompts of the shipped file that land in the train split (after skipping `offset` of them)."""
    from dsc_assets.lib.tasks import Task, load_task_spec

    task = Task(name, task_dir, load_task_spec(name, task_dir.parent), [])
    lines = (ROOT / "prompts" / name / "prompts.jsonl").read_text().splitlines()
    train = [line for line in lines if line.strip() and task.split_of(json.loads(line)["id"]) == "train"]
    return train[offset : offset + count]


def calls(home: Path) -> int:
    """Model calls ever made (the in-process cache connection: DuckDB allows one configuration per file)."""
    from resources.stores import CallCache

    return CallCache(home / "cache.duckdb").count("chat")


def calls_of_another_process(home: Path) -> int:
    import duckdb

    with duckdb.connect(str(home / "cache.duckdb"), read_only=True) as con:
        return con.execute("SELECT count(*) FROM calls WHERE kind = 'chat'").fetchone()[0]


def dsc(*args: str) -> tuple[float, str]:
    from dsc_assets.cli.main import main

    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(args))
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"dsc {' '.join(args)} failed:\n{out.getvalue()[-2000:]}")
    return seconds, out.getvalue()


def rebuilt(output: str) -> list[str]:
    return [
        line.removeprefix("dsc refresh: ")
        for line in output.splitlines()
        if line.startswith("dsc refresh: ") and "nothing is stale" not in line
    ]


def kill_and_resume(work: Path, profile: Path, prompts: int) -> dict:
    """A separate DSC_HOME; kill -9 while drafts are being generated, then rerun and count calls."""
    home = work / "kill-home"
    env = {
        **os.environ,
        "DSC_HOME": str(home),
        "DAGSTER_HOME": str(work / "kill-dagster"),
        "DSC_PROMPTS_DIR": os.environ["DSC_PROMPTS_DIR"],
    }
    command = [
        sys.executable,
        "-c",
        "from dsc_assets.cli.main import main; raise SystemExit(main())",
        "refresh",
        "--profile",
        str(profile),
        "--tasks",
        "sentiment",
        "--select",
        "raw_prompts,drafts",
    ]
    process = subprocess.Popen(
        command, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in process.stdout:  # progress is logged every 5 rows: kill once drafts are under way
        if f"draft step 0: {5 * max(1, prompts // 10)}/" in line:
            break
    process.kill()  # SIGKILL: no cleanup, no flush
    process.wait()
    done = calls_of_another_process(home)
    started = time.perf_counter()
    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if rerun.returncode != 0:
        raise SystemExit(f"resume failed:\n{rerun.stderr[-2000:]}")
    rerun_calls = calls_of_another_process(home) - done
    # work lost: finished rows the rerun had to generate again (goal 0; the call in flight is not finished)
    return {
        "done_before_kill": done,
        "rerun_calls": rerun_calls,
        "rows": prompts,
        "recomputed_finished_rows": rerun_calls - (prompts - done),
        "rerun_s": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="train prompts per task (n)")
    parser.add_argument("--added", type=int, default=2, help="prompts added to one task (k)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dsc-bench-inc-"))
    prompts_dir, home = work / "prompts", work / "home"
    for name in TASKS:
        shutil.copytree(ROOT / "prompts" / name, prompts_dir / name)
        (prompts_dir / name / "prompts.jsonl").write_text(
            "\n".join(train_prompts(prompts_dir / name, name, args.prompts)) + "\n"
        )
    profile = work / "bench.yaml"
    write_profile(profile, args.prompts + args.added, args.max_tokens)
    os.environ.update(
        {
            "DSC_HOME": str(home),
            "DAGSTER_HOME": str(work / "dagster"),
            "DSC_PROMPTS_DIR": str(prompts_dir),
            "DSC_PROFILE": str(profile),
        }
    )

    started = time.perf_counter()
    import dsc_assets.definitions  # noqa: F401  imports: dagster, torch, llama_cpp, the code location

    imports = time.perf_counter() - started
    common = ("--tasks", ",".join(TASKS), "--select", SELECT)
    rows = []

    def record(name: str, seconds: float, made: int, what: list[str], reference: float, note: str = "") -> None:
        rows.append(
            {
                "scenario": name,
                "seconds": round(seconds, 2),
                "ratio": round(seconds / reference, 4),
                "model_calls": made,
                "rebuilt": what,
                "note": note,
            }
        )
        print(
            f"{name:<34} {seconds:8.2f} s  {100 * seconds / reference:6.1f}%  {made:4d} model calls   "
            f"{'; '.join(what) or '-'}",
            flush=True,
        )

    per_task = {}
    for name in TASKS:  # full run, one task at a time so each task's own cost is known too
        before = calls(home)
        seconds, out = dsc("refresh", "--tasks", name, "--select", SELECT)
        per_task[name] = (seconds, calls(home) - before)
    full = sum(s for s, _ in per_task.values())
    print(f"imports (not counted anywhere below): {imports:.1f} s\n")
    record("full (2 tasks)", full, sum(c for _, c in per_task.values()), [f"{n}: everything" for n in TASKS], full)

    before = calls(home)
    seconds, out = dsc("refresh", *common)
    record("no-op refresh", seconds, calls(home) - before, rebuilt(out), full)

    task_file = prompts_dir / "sentiment" / "task.yaml"
    task_file.write_text(
        task_file.read_text().replace("clearly positive about the movie", "warmly positive about the film")
    )
    plan_s, planned = dsc("plan", *common)
    before = calls(home)
    seconds, out = dsc("refresh", *common)
    record(
        "edit sentiment revision template",
        seconds,
        calls(home) - before,
        rebuilt(out),
        full,
        f"plan took {plan_s:.2f} s",
    )

    prompts_file = prompts_dir / "sentiment" / "prompts.jsonl"
    added = train_prompts(prompts_dir / "sentiment", "sentiment", args.added, offset=args.prompts)
    prompts_file.write_text(prompts_file.read_text() + "\n".join(added) + "\n")
    before = calls(home)
    seconds, out = dsc("refresh", *common)
    made = calls(home) - before
    full_s, full_calls = per_task["sentiment"]
    record(f"{args.added} prompts added to {args.prompts}", seconds, made, rebuilt(out), full)
    print(
        f"{'':<34} vs sentiment's full run: time {100 * seconds / full_s:.1f}%, calls {100 * made / full_calls:.1f}% "
        f"(k/n = {100 * args.added / args.prompts:.1f}%)"
    )

    killed = kill_and_resume(work, profile, args.prompts + args.added)
    print(
        f"\nkill -9 during drafts: {killed['done_before_kill']}/{killed['rows']} drafts done before the kill, "
        f"rerun made {killed['rerun_calls']} calls (rows not finished: {killed['rows'] - killed['done_before_kill']}); "
        f"finished rows computed again: {killed['recomputed_finished_rows']}"
    )
    print(
        f"\nn = {args.prompts} train prompts per task, max {args.max_tokens} tokens, SmolLM2-135M, "
        f"{os.cpu_count()} CPU threads; work folder {work}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "kill_and_resume": killed, "imports_s": imports}, indent=2)
        )


if __name__ == "__main__":
    main()
