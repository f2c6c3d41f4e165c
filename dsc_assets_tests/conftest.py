"""Shared fixtures: a temporary DSC_HOME per test, the test profile, real tiny models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Everything below runs on the test profile (SmolLM2-135M everywhere); set before dsc_assets is imported.
os.environ.setdefault("DSC_PROFILE", "test")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def dsc_home(tmp_path, monkeypatch) -> Path:
    """A fresh DSC_HOME (tables, call cache) for one test; the assembled-model cache is shared to save time."""
    from resources import stores

    home = tmp_path / "dsc_home"
    home.mkdir()
    monkeypatch.setenv("DSC_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    yield home
    stores.close_all()


@pytest.fixture
def prompts_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of prompts/ that a test may edit; DSC_PROMPTS_DIR points at it."""
    target = tmp_path / "prompts"
    shutil.copytree(PROJECT_ROOT / "prompts", target)
    monkeypatch.setenv("DSC_PROMPTS_DIR", str(target))
    return target


def run_cli(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a console command from the project's virtualenv with the given environment additions."""
    bin_dir = Path(sys.executable).parent
    full_env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(args, cwd=PROJECT_ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)

