"""Reading a YAML settings file (task.yaml, a profile) the one way: a syntax error or a file that is not UTF-8 text
becomes the caller's own error class with the file and where in it; anything but a mapping is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_mapping(path: Path, error: type[Exception], expected: str, empty: Any = None) -> dict:
    """The file's top-level mapping (``empty`` stands in for an empty file); ``error`` (naming the file and the
    problem) for invalid YAML, non-UTF-8 bytes or another top-level type; ``expected`` names what a mapping holds."""
    text = read_utf8(path, error)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML{_where(problem)}") from None
    if raw is None and empty is not None:
        raw = empty
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping of settings ({expected}, ...), got {type(raw).__name__}")
    return raw


def _where(problem: yaml.YAMLError) -> str:
    """Where the broken construct starts (an unclosed quote's line, not the end of the file where YAML gave up),
    then what is wrong."""
    context, mark = getattr(problem, "context_mark", None), getattr(problem, "problem_mark", None)
    what = getattr(problem, "problem", None) or str(problem)
    if context is not None:
        gave_up = f" (noticed at line {mark.line + 1})" if mark is not None and mark.line != context.line else ""
        return f" at line {context.line + 1}, column {context.column + 1}: {problem.context}: {what}{gave_up}"
    if mark is not None:
        return f" at line {mark.line + 1}, column {mark.column + 1}: {what}"
    return f": {what}"


def read_utf8(path: Path, error: type[Exception]) -> str:
    """The file's text; ``error`` naming the line and byte offset of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data.count(b"\n", 0, bad.start) + 1
        column = bad.start - (data.rfind(b"\n", 0, bad.start) + 1) + 1
        raise error(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[bad.start]:02x} at byte offset {bad.start}, column {column} "
            "of that line); save the file as UTF-8"
        ) from None
