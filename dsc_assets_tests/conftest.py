"""Shared fixtures: a temporary DSC_HOME per test, the test profile, real tiny models."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["dsc_assets_tests.postgres"]  # a real PostgreSQL server: postgres_server, postgres_url

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


def private_tasks(root: Path, counts: dict[str, int]) -> Path:
    """Copies of shipped tasks under ``root`` (point DSC_PROMPTS_DIR at it), each holding ``count`` short generated
    prompts whose ids the task's split puts in train."""
    import json

    from dsc_assets.lib.tasks import Task, load_task_spec

    for name, count in counts.items():
        if not (root / name).exists():
            shutil.copytree(PROJECT_ROOT / "prompts" / name, root / name)
        task = Task(name, root / name, load_task_spec(name, root), [])
        ids, n = [], 0
        while len(ids) < count:
            if task.split_of(f"{name}-x{n}") == "train":
                ids.append(f"{name}-x{n}")
            n += 1
        (root / name / "prompts.jsonl").write_text(
            "".join(
                json.dumps({"id": i, "prompt": f"Question number {k} for {name}: what do you think of rainy days?"})
                + "\n"
                for k, i in enumerate(ids)
            )
        )
    return root


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        method="POST",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_location(port: int, server: subprocess.Popen, timeout: float = 240) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "dagster dev exited"
        try:
            data = graphql(
                port,
                "{ workspaceOrError { ... on Workspace { locationEntries { name "
                "locationOrLoadError { __typename } } } } }",
            )
            entries = data["data"]["workspaceOrError"]["locationEntries"]
            if (
                entries
                and entries[0]["locationOrLoadError"]
                and entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            ):
                return
            assert (
                not entries
                or entries[0]["locationOrLoadError"] is None
                or entries[0]["locationOrLoadError"]["__typename"] != "PythonError"
            ), data
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError("the code location did not load")


@contextlib.contextmanager
def dagster_dev(env: dict[str, str]) -> Iterator[int]:
    """`dagster dev` on 127.0.0.1 with the instance configuration every dsc command writes (and `make ui` uses),
    started in its own process group (it ignores SIGINT otherwise) and ended with it; yields the port once the code
    location has loaded."""
    import signal

    subprocess.run(
        [sys.executable, "-c", "from dsc_assets.cli.common import prepare_environment as p; p(None)"],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
    )
    port = _free_port()
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    server = subprocess.Popen(
        [dagster, "dev", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_location(port, server)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
