"""Fail fast: everything that can be known before the first model call, checked in seconds by `dsc run`, `dsc plan`,
`dsc gate` and `dsc refresh` before they start anything.

- every task folder loads (task.yaml fields, scorer names and options, prompts.jsonl lines; see tasks.py);
- every model the profile names is installed, verified and readable by llama.cpp (its vocabulary is loaded, not the
  weights);
- every prompt fits the context windows it will meet: the generator's for the longest call of the chain (the
  revision: system prompt, revision template, the prompt, a draft and a critique of up to ``max_tokens`` each, and
  room for the answer), the judge's for the DLMA self-reward, the student's for the evaluation. Tokens are counted
  with each model's own tokenizer; a chat template's markers are counted as ``CHAT_OVERHEAD`` tokens per message,
  more than ChatML needs, so the check errs on the side of failing;
- the DuckDB files under DSC_HOME are not locked by another process; a call cache on PostgreSQL answers.

Each problem is one line that names the file (and line, prompt id or field) and the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dsc_assets.lib.context_window import Window, context_problems, token_counter
from dsc_assets.lib.task_spec import TaskError
from dsc_assets.lib.tasks import Task, load_task
from resources.models import ModelError, resolve_model
from resources.stores import open_when_free


class PreflightError(RuntimeError):
    """One or more problems that would stop a run; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def profile_windows(profile, home: Path, profile_file: str) -> tuple[list[Window], list[str]]:
    """Resolve and open (vocabulary only) each model the profile runs in llama.cpp; problems name the field."""
    roles = [("judge", profile.judge), ("student", profile.student)]
    if profile.generator.backend == "llama_cpp":  # a server's tokenizer is not known here
        roles.insert(0, ("generator", profile.generator))
    windows, problems, counters = [], [], {}
    for role, settings in roles:
        try:
            path = resolve_model(settings.model, home / "models").path
            counters.setdefault(str(path), token_counter(path))
        except ModelError as error:
            problems.append(f"{profile_file}: {role}.model '{settings.model}': {error}")
            continue
        windows.append(Window(role, settings.n_ctx, counters[str(path)], f"{role}.n_ctx"))
    return windows, problems


def task_model_problems(
    tasks: list[Task], home: Path, second_scorers: dict | None = None, profile_file: str = "the profile"
) -> list[str]:
    """A judge that names its own model (``options.model``, e.g. a second reward's) must find it installed now, not
    when the evaluation first scores after every checkpoint was trained; a profile's ``second_scorers`` (task ->
    Scorer) stands in for task.yaml's and must differ from the task's first reward."""
    problems = []
    for task in tasks:
        override = (second_scorers or {}).get(task.name)
        for field in ("scorer", "second_scorer"):
            from_profile = field == "second_scorer" and override is not None
            scorer = override if from_profile else getattr(task.spec, field)
            where = (
                f"{profile_file}: field 'second_scorers.{task.name}"
                if from_profile
                else f"{task.folder / 'task.yaml'}: field '{field}"
            )
            if from_profile and scorer == task.spec.scorer:
                problems.append(f"{where}' is the task's first reward: a second reward must be another scorer or model")
            model = scorer.options.get("model") if scorer is not None and scorer.name == "judge" else None
            if model:
                try:
                    resolve_model(model, home / "models")
                except ModelError as error:
                    problems.append(f"{where}.options.model' '{model}': {error}")
    return problems


LOCK_GRACE_ENV = "DSC_LOCK_GRACE_S"


def _lock_held_through(path: Path, grace_s: float) -> Exception | None:
    """The lock error if ``path`` stayed locked by another process for ``grace_s`` seconds, else None."""
    import duckdb

    try:
        open_when_free(str(path), False, grace_s).close()
        return None
    except duckdb.IOException as error:
        if "lock" not in str(error).lower():
            raise
        return error


def lock_problems(home: Path, grace_s: float | None = None) -> list[str]:
    """DuckDB takes one writer process per file: say now, not after the first model call, if another one holds it.
    A working dsc run holds each file only while it writes (the cache closes after 0.3 s idle, the warehouse per
    step), so a lock counts as a conflict only if it is held through a grace period (DSC_LOCK_GRACE_S, 10 s); a
    momentary one belongs to a concurrent run, which the cache and the IO manager wait for."""
    grace_s = float(os.environ.get(LOCK_GRACE_ENV, 10)) if grace_s is None else grace_s
    problems = []
    for name in ("warehouse.duckdb", "cache.duckdb"):
        path = home / name
        error = _lock_held_through(path, grace_s) if path.exists() else None
        if error is not None:
            holder = re.search(r"\(PID \d+\)", str(error))
            problems.append(
                f"{path}: locked by another process{' ' + holder.group(0) if holder else ''} "
                f"({str(error).splitlines()[0]}). Fix: stop that dsc or dagster run (or `dagster dev`), "
                f"or point DSC_HOME elsewhere"
            )
    return problems


def cache_server_problems(profile, home: Path) -> list[str]:
    """The shared deployment's call cache and warehouse (postgresql:// URLs) must answer before the first model
    call."""
    from dsc_assets.lib.profiles import cache_location, warehouse_location
    from resources.stores import open_cache, open_warehouse

    problems = []
    checks = [
        ("call cache", cache_location(profile, home), lambda url: open_cache(url, read_only=True).count()),
        ("warehouse", warehouse_location(profile, home), lambda url: open_warehouse(url).tables()),
    ]
    for name, location, check in checks:
        if location.startswith(("postgresql://", "postgres://")):
            try:
                check(location)
            except Exception as error:  # noqa: BLE001  *UnavailableError, or a driver error the URL provokes
                problems.append(f"{name}: {' '.join(str(error).split())}")
    return problems


def preflight(
    profile, tasks: list[str], home: Path, profile_file: str, max_tokens_cap: int | None = None, locks: bool = True
) -> list[Task]:
    """Load every task and check models, context windows and locks; raise PreflightError listing every problem."""
    problems, loaded = [], []
    for name in tasks:
        try:
            loaded.append(load_task(name))
        except TaskError as error:
            problems += str(error).splitlines()
    windows, model_problems = profile_windows(profile, home, profile_file)
    problems += model_problems + task_model_problems(loaded, home, dict(profile.second_scorers), profile_file)
    for task in loaded:
        max_tokens = task.sampling_for(max_tokens_cap).max_tokens
        for window in windows:
            problems += context_problems(task, window, max_tokens, profile_file)
    if locks:
        problems += lock_problems(home)
    problems += cache_server_problems(profile, home)
    if problems:
        raise PreflightError(problems)
    return loaded
