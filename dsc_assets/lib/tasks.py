"""Task definitions: ``prompts/<task>/task.yaml`` + ``prompts.jsonl``, validated on load.

A task is data, not code. Every error names the file, the field (or line) and the fix.
"""

from __future__ import annotations

import difflib
import json
import os
from functools import cached_property
from pathlib import Path

from pydantic import ValidationError

from dsc_assets.lib.leaks import Link, components, links
from dsc_assets.lib.paths import PROJECT_ROOT
from dsc_assets.lib.task_spec import FIELD_HINTS, REMOVED_METHOD, PromptRecord, Scorer, TaskError, TaskSpec
from dsc_assets.lib.yaml_files import read_mapping, read_utf8
from resources.hashing import content_hash, file_sha256
from resources.llm import SamplingParams

PROMPTS_DIR_ENV = "DSC_PROMPTS_DIR"
TASK_FILE = "task.yaml"
PROMPTS_FILE = "prompts.jsonl"


class Task:
    """A validated task folder."""

    def __init__(
        self, name: str, folder: Path, spec: TaskSpec, prompts: list[PromptRecord], lines: dict[str, int] | None = None
    ):
        self.name, self.folder, self.spec, self.prompts = name, folder, spec, prompts
        self.lines = lines or {}  # prompt id -> line number in prompts.jsonl, for errors that name the line

    def __repr__(self) -> str:
        return f"Task({self.name!r}, {len(self.prompts)} prompts)"

    def sampling_for(self, max_tokens_cap: int | None) -> SamplingParams:
        """The task's sampling parameters with max_tokens capped by the profile."""
        params = self.spec.sampling
        if max_tokens_cap and params.max_tokens > max_tokens_cap:
            params = params.model_copy(update={"max_tokens": max_tokens_cap})
        return params

    def second_scorer_for(self, overrides: dict[str, str] | None = None) -> Scorer | None:
        """The evaluation's second reward: the profile's for this task (``second_scorers``, a scorer as JSON by task)
        where it names one, else task.yaml's ``second_scorer``."""
        text = (overrides or {}).get(self.name)
        return Scorer.model_validate_json(text) if text else self.spec.second_scorer

    def split_of(self, prompt_id: str) -> str:
        """'train', 'dev' or 'test', from the prompt's group and the split seed alone (a prompt without a group is
        its own, by id): adding a prompt that links no group never moves old ones."""
        split = self.spec.split
        group = self.groups.get(prompt_id, prompt_id)  # an id not in the file yet: its own group
        draw = int(content_hash("split", split.seed, group, length=8), 16) / 16**8
        return (
            "test"
            if draw < split.test_fraction
            else "dev"
            if draw < split.test_fraction + split.dev_fraction
            else "train"
        )

    @cached_property
    def links(self) -> list[Link]:
        """Every linked pair of this task's prompts (lib/leaks.py), computed once: the grouping and the leak check
        both read them."""
        return links(self.prompts)

    @cached_property
    def groups(self) -> dict[str, str]:
        """Each prompt id's group: its declared ``group`` (else its id), or under ``group_by: linked`` its component
        of linked prompts (lib/leaks.py)."""
        if self.spec.split.group_by == "linked":
            return components(self.prompts, self.links)
        return {p.id: str(getattr(p, "group", None) or p.id) for p in self.prompts}

    @cached_property
    def prompts_file_version(self) -> str:
        """Hash of the prompts file's bytes: any edit, even whitespace, makes raw_prompts rebuild (and stop there
        if the parsed prompts did not change)."""
        return file_sha256(str(self.folder / PROMPTS_FILE))[:16]


def _format_validation(path: Path, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        top = str(item["loc"][0]) if item["loc"] else ""
        hint = FIELD_HINTS.get(top)
        if item["type"] == "missing":
            lines.append(f"{path}: field '{location}' is missing (expected {hint or 'a value'})")
        elif item["type"] == "extra_forbidden":
            known = list(TaskSpec.model_fields) if len(item["loc"]) == 1 else []
            close = difflib.get_close_matches(location.split(".")[-1], known, n=1)
            suggestion = (
                f"; did you mean '{close[0]}'?" if close else f"; known fields: {', '.join(known)}" if known else ""
            )
            lines.append(f"{path}: field '{location}' is not a task setting{suggestion}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: field '{location}' {message}" + (f" (expected {hint})" if hint else ""))
    return "\n".join(lines)


def _load_spec(path: Path) -> TaskSpec:
    if not path.is_file():
        raise TaskError(f"{path}: file is missing (every task folder needs a {TASK_FILE})")
    raw = read_mapping(path, TaskError, "description, system_prompt")
    if "method" in raw:
        raise TaskError(f"{path}: {REMOVED_METHOD}")
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as error:
        raise TaskError(_format_validation(path, error)) from None


def _load_prompts(path: Path) -> tuple[list[PromptRecord], dict[str, int]]:
    if not path.is_file():
        raise TaskError(f"{path}: file is missing (one JSON object per line with 'id' and 'prompt')")
    records: list[PromptRecord] = []
    seen: dict[str, int] = {}
    text = read_utf8(path, TaskError)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise TaskError(f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(data, dict):
            raise TaskError(f"{path}:{number}: expected a JSON object with 'id' and 'prompt'")
        try:
            record = PromptRecord.model_validate(data)
        except ValidationError as error:
            detail = "; ".join(
                f"field '{'.'.join(map(str, e['loc']))}' {'is missing' if e['type'] == 'missing' else e['msg']}"
                for e in error.errors()
            )
            raise TaskError(f'{path}:{number}: {detail} (expected {{"id": "...", "prompt": "..."}})') from None
        if record.id in seen:
            raise TaskError(f"{path}:{number}: id '{record.id}' repeats line {seen[record.id]}; ids must be unique")
        seen[record.id] = number
        records.append(record)
    if not records:
        raise TaskError(f"{path}: holds no prompts (one JSON object per line with 'id' and 'prompt')")
    return records, seen


def prompts_dir() -> Path:
    """The tasks folder: ``$DSC_PROMPTS_DIR`` or ``prompts/`` at the project root."""
    return Path(os.environ.get(PROMPTS_DIR_ENV) or PROJECT_ROOT / "prompts")


def task_names(root: Path | None = None) -> list[str]:
    """Every folder under ``prompts/`` with a task.yaml: one partition each."""
    root = root or prompts_dir()
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and (p / TASK_FILE).exists() and not p.name.startswith((".", "_"))
    )


def _task_folder(name: str, root: Path | None) -> Path:
    folder = (root or prompts_dir()) / name
    if not folder.is_dir():
        raise TaskError(f"{folder}: no such task folder (known tasks: {', '.join(task_names(root)) or 'none'})")
    return folder


def load_task_spec(name: str, root: Path | None = None) -> TaskSpec:
    return _load_spec(_task_folder(name, root) / TASK_FILE)


def load_task(name: str, root: Path | None = None) -> Task:
    folder = _task_folder(name, root)
    spec = _load_spec(folder / TASK_FILE)
    prompts, lines = _load_prompts(folder / PROMPTS_FILE)
    return Task(name, folder, spec, prompts, lines)
