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
- the DuckDB files under DSC_HOME are not locked by another process.

Each problem is one line that names the file (and line, prompt id or field) and the fix.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dsc_assets.tasks import Task, TaskError, load_task
from resources.models import ModelError, resolve_model

CHAT_OVERHEAD = 8  # tokens per chat message for the template's role markers (ChatML uses 5)
MAX_LISTED = 5  # oversized prompts listed per task and model; the rest are counted


class PreflightError(RuntimeError):
    """One or more problems that would stop a run; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


_VOCABS: dict[str, object] = {}
_VOCAB_LOCK = threading.Lock()


@atexit.register
def _free_vocabs() -> None:
    """Free the vocabularies before the interpreter tears llama_cpp down (a later __del__ finds it gone)."""
    for model in _VOCABS.values():
        model.close()
    _VOCABS.clear()


def token_counter(model_path: Path) -> Callable[[str], int]:
    """Count tokens with a model's own tokenizer: llama.cpp loads the vocabulary only (no weights, no compute)."""
    with _VOCAB_LOCK:
        llama = _VOCABS.get(str(model_path))
        if llama is None:
            import llama_cpp
            from llama_cpp._internals import LlamaModel  # the model without a context: Llama() would make one

            params = llama_cpp.llama_model_default_params()
            params.vocab_only = True
            try:
                llama = LlamaModel(path_model=str(model_path), params=params, verbose=False)
            except (ValueError, RuntimeError) as error:
                raise ModelError(f"llama.cpp cannot read {model_path}: {error}. Reinstall the model or fix the path.") from error
            _VOCABS[str(model_path)] = llama
    cache: dict[str, int] = {}

    def count(text: str) -> int:
        if text not in cache:
            cache[text] = len(llama.tokenize(text.encode("utf-8"), False, False))
        return cache[text]

    return count


def _fixed_text(template: str) -> str:
    return re.sub(r"\{[a-z_]+\}", " ", template)


@dataclass
class Window:
    """A context window a task's prompts must fit: which model, its n_ctx, and the profile field that sets it."""

    role: str  # generator, judge, student
    n_ctx: int
    count: Callable[[str], int]
    field: str  # e.g. "generator.n_ctx"


def context_problems(task: Task, window: Window, max_tokens: int, profile_file: str) -> list[str]:
    """Prompts of ``task`` whose longest call on ``window``'s model would not fit, one line each (file, line, id, fix)."""
    spec, count = task.spec, window.count
    system = count(spec.system_prompt)
    uses_prompt = lambda template: "{prompt}" in template  # noqa: E731
    if window.role == "generator":
        # (call, fixed tokens, prompt counted?, unknown generated texts in the request)
        calls = [("draft", system, True, 0),
                 ("critique", system + count(_fixed_text(spec.critique_template)), uses_prompt(spec.critique_template), 1),
                 ("revision", system + count(_fixed_text(spec.revision_template)), uses_prompt(spec.revision_template), 2)]
        if spec.contrastive is not None:
            longest = max(spec.contrastive.positive_affix, spec.contrastive.negative_affix, key=count)
            calls.append(("contrastive", count(f"{spec.system_prompt} {longest}"), True, 0))
        split = "train"
    elif window.role == "judge":  # DLMA self-reward: the prompt under an affixed system prompt, then the answer
        if spec.contrastive is None:
            return []
        longest = max(spec.contrastive.positive_affix, spec.contrastive.negative_affix, key=count)
        calls, split = [("self-reward", count(f"{spec.system_prompt} {longest}"), True, 0)], "train"
    else:  # the student answers the held-out prompts in the evaluation
        calls, split = [("evaluation", system, True, 0)], "test"
    problems, more = [], 0
    for record in task.prompts:
        if task.split_of(record.id) != split:
            continue
        prompt = count(record.prompt)
        need, call = max((fixed + (prompt if with_prompt else 0) + texts * max_tokens + 2 * CHAT_OVERHEAD + max_tokens,
                          name) for name, fixed, with_prompt, texts in calls)
        if need <= window.n_ctx:
            continue
        if len(problems) >= MAX_LISTED:
            more += 1
            continue
        line = task.lines.get(record.id, "?")
        problems.append(
            f"{task.folder / 'prompts.jsonl'}:{line}: prompt '{record.id}' ({prompt} tokens) needs {need} tokens in the "
            f"{window.role}'s {call} call (with {max_tokens} tokens per answer) but {window.field} is {window.n_ctx}. "
            f"Fix: raise {window.field} in {profile_file} to at least {need}, shorten the prompt, or delete line {line}")
    if more:
        problems.append(f"{task.folder / 'prompts.jsonl'}: {more} more prompt(s) do not fit {window.field} = {window.n_ctx}")
    return problems


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


LOCK_GRACE_ENV = "DSC_LOCK_GRACE_S"


def _lock_held_through(path: Path, grace_s: float) -> Exception | None:
    """The lock error if ``path`` stayed locked by another process for ``grace_s`` seconds, else None."""
    import time

    import duckdb

    deadline = time.monotonic() + grace_s
    while True:
        try:
            duckdb.connect(str(path)).close()
            return None
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
            if time.monotonic() >= deadline:
                return error
            time.sleep(0.05)


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
            problems.append(f"{path}: locked by another process{' ' + holder.group(0) if holder else ''} "
                            f"({str(error).splitlines()[0]}). Fix: stop that dsc or dagster run (or `dagster dev`), "
                            f"or point DSC_HOME elsewhere")
    return problems


def preflight(profile, tasks: list[str], home: Path, profile_file: str, max_tokens_cap: int | None = None,
              locks: bool = True) -> list[Task]:
    """Load every task and check models, context windows and locks; raise PreflightError listing every problem."""
    problems, loaded = [], []
    for name in tasks:
        try:
            loaded.append(load_task(name))
        except TaskError as error:
            problems += str(error).splitlines()
    windows, model_problems = profile_windows(profile, home, profile_file)
    problems += model_problems
    for task in loaded:
        max_tokens = task.sampling_for(max_tokens_cap).max_tokens
        for window in windows:
            problems += context_problems(task, window, max_tokens, profile_file)
    if locks:
        problems += lock_problems(home)
    if problems:
        raise PreflightError(problems)
    return loaded
