"""A backfill over three partitions through `dagster dev` (the UI's GraphQL API, the instance's run queue, the run
launcher), with the dagster.yaml that `dsc` writes: every run succeeds, one at a time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import dagster as dg

from dsc_assets.profiles import PROJECT_ROOT
from dsc_assets.tasks import Task, load_task_spec

TASKS = ["privacy", "sentiment", "sycophancy"]
LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId launchedRunIds }
    ... on PythonError { message stack }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", method="POST",
                                     data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_location(port: int, server: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "dagster dev exited"
        try:
            data = _graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { name "
                                  "locationOrLoadError { __typename } } } } }")
            entries = data["data"]["workspaceOrError"]["locationEntries"]
            if entries and entries[0]["locationOrLoadError"] and \
                    entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                return
            assert not entries or entries[0]["locationOrLoadError"] is None or \
                entries[0]["locationOrLoadError"]["__typename"] != "PythonError", data
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError("the code location did not load")


def _small_prompts(root, tasks: list[str], count: int) -> None:
    """Private copies of the tasks with ``count`` train prompts each."""
    for name in tasks:
        shutil.copytree(PROJECT_ROOT / "prompts" / name, root / name)
        task = Task(name, root / name, load_task_spec(name, root), [])
        ids = [f"{name}-x{n}" for n in range(40) if task.split_of(f"{name}-x{n}") == "train"][:count]
        (root / name / "prompts.jsonl").write_text("".join(
            json.dumps({"id": i, "prompt": f"Question {k} for {name}: what do you think of rainy days?"}) + "\n"
            for k, i in enumerate(ids)))


def test_backfill_of_three_partitions_through_the_queue(tmp_path):
    root = tmp_path / "prompts"
    _small_prompts(root, TASKS, 2)
    env = {**os.environ, "DSC_PROFILE": "test", "DSC_PROMPTS_DIR": str(root), "DSC_HOME": str(tmp_path / "home"),
           "DAGSTER_HOME": str(tmp_path / "dagster"), "OMP_WAIT_POLICY": "PASSIVE"}
    # the instance configuration every dsc command writes (and `make ui` uses)
    subprocess.run([sys.executable, "-c", "from dsc_assets.cli import _prepare_environment as p; p(None)"],
                   cwd=PROJECT_ROOT, env=env, check=True)
    port = _free_port()
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    server = subprocess.Popen([dagster, "dev", "-h", "127.0.0.1", "-p", str(port)], cwd=PROJECT_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_location(port, server)
        result = _graphql(port, LAUNCH, {"params": {
            "selector": {"partitionSetName": "dsc_job_partition_set",
                         "repositorySelector": {"repositoryName": "__repository__", "repositoryLocationName": "dsc"}},
            "partitionNames": TASKS,
            "assetSelection": [{"path": ["raw_prompts"]}, {"path": ["drafts"]}],
            # Submit the three runs to the run queue now rather than at the backfill daemon's next 30 s tick.
            "forceSynchronousSubmission": True,
        }})["data"]["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            deadline = time.monotonic() + 420
            while time.monotonic() < deadline:
                runs = instance.get_runs(dg.RunsFilter(run_ids=result["launchedRunIds"]))
                if len(runs) == 3 and all(r.is_finished for r in runs):
                    break
                time.sleep(2)
            records = instance.get_run_records(dg.RunsFilter(run_ids=result["launchedRunIds"]))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert sorted((r.dagster_run.tags["dagster/partition"], r.dagster_run.status.value) for r in records) == \
        [(task, "SUCCESS") for task in TASKS]
    spans = sorted((r.start_time, r.end_time) for r in records)
    assert all(later[0] >= earlier[1] - 0.5 for earlier, later in zip(spans, spans[1:])), "the queue runs one at a time"
