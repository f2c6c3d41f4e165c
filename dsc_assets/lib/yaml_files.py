"""Reading a YAML settings file (task.yaml, a profile) the one way: a syntax error or a file that is not UTF-8 text
becomes the caller's own error class with the file and where in it; anything but a mapping is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_mapping(path: Path, error: type[Exception], expected: str, empty: Any = None) -> dict:
    """The file's top-level mapping (``empty`` stands in for an empty file); ``error`` (naming the file and the
    problem) for invalid YAML, non-UTF-8 bytes or another top-level type; ``expected`` names what a mapping holds."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{path}: not valid YAML{where}: {getattr(problem, 'problem', problem)}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    if raw is None and empty is not None:
        raw = empty
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping of settings ({expected}, ...), got {type(raw).__name__}")
    return raw
