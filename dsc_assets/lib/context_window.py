"""Does every prompt fit the context windows it meets? Tokens counted with each model's own tokenizer (llama.cpp
loads the vocabulary only); used by the preflight before a run and by the blocking check on raw_prompts."""

from __future__ import annotations

import atexit
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dsc_assets.lib.tasks import Task
from resources.models import ModelError

CHAT_OVERHEAD = 8  # tokens per chat message for the template's role markers (ChatML uses 5)
MAX_LISTED = 5  # oversized prompts listed per task and model; the rest are counted

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
                raise ModelError(
                    f"llama.cpp cannot read {model_path}: {error}. Reinstall the model or fix the path."
                ) from error
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
        calls = [
            ("draft", system, True, 0),
            ("critique", system + count(_fixed_text(spec.critique_template)), uses_prompt(spec.critique_template), 1),
            ("revision", system + count(_fixed_text(spec.revision_template)), uses_prompt(spec.revision_template), 2),
        ]
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
        calls, split = [("evaluation", system, True, 0)], "held out"
    problems, more = [], 0
    for record in task.prompts:
        if (task.split_of(record.id) == "train") != (split == "train"):  # held out: test and dev alike
            continue
        prompt = count(record.prompt)
        need, call = max(
            (fixed + (prompt if with_prompt else 0) + texts * max_tokens + 2 * CHAT_OVERHEAD + max_tokens, name)
            for name, fixed, with_prompt, texts in calls
        )
        if need <= window.n_ctx:
            continue
        if len(problems) >= MAX_LISTED:
            more += 1
            continue
        line = task.lines.get(record.id, "?")
        problems.append(
            f"{task.folder / 'prompts.jsonl'}:{line}: prompt '{record.id}' ({prompt} tokens) needs {need} tokens in the "
            f"{window.role}'s {call} call (with {max_tokens} tokens per answer) but {window.field} is {window.n_ctx}. "
            f"Fix: raise {window.field} in {profile_file} to at least {need}, shorten the prompt, or delete line {line}"
        )
    if more:
        problems.append(
            f"{task.folder / 'prompts.jsonl'}: {more} more prompt(s) do not fit {window.field} = {window.n_ctx}"
        )
    return problems
