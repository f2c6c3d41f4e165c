"""A backfill over three partitions through `dagster dev` (the UI's GraphQL API, the instance's run queue, the run
launcher), with the dagster.yaml that `dsc` writes: every run succeeds, one at a time."""

from __future__ import annotations

import os
import time

import dagster as dg

from dsc_assets_tests.conftest import dagster_dev, graphql, private_tasks

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


def backfill_params(tasks: list[str], assets: list[str]) -> dict:
    """launchPartitionBackfill's params for these partitions of dsc_job and these assets, as the UI sends them;
    submitted to the run queue now rather than at the backfill daemon's next 30 s tick."""
    return {
        "selector": {
            "partitionSetName": "dsc_job_partition_set",
            "repositorySelector": {"repositoryName": "__repository__", "repositoryLocationName": "dsc"},
        },
        "partitionNames": tasks,
        "assetSelection": [{"path": [asset]} for asset in assets],
        "forceSynchronousSubmission": True,
    }


def test_backfill_of_three_partitions_through_the_queue(tmp_path):
    root = private_tasks(tmp_path / "prompts", {task: 2 for task in TASKS})
    env = {
        **os.environ,
        "DSC_PROFILE": "test",
        "DSC_PROMPTS_DIR": str(root),
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    with dagster_dev(env) as port:
        params = backfill_params(TASKS, ["raw_prompts", "drafts"])
        result = graphql(port, LAUNCH, {"params": params})["data"]["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            deadline = time.monotonic() + 420
            while time.monotonic() < deadline:
                runs = instance.get_runs(dg.RunsFilter(run_ids=result["launchedRunIds"]))
                if len(runs) == 3 and all(r.is_finished for r in runs):
                    break
                time.sleep(2)
            records = instance.get_run_records(dg.RunsFilter(run_ids=result["launchedRunIds"]))
    assert sorted((r.dagster_run.tags["dagster/partition"], r.dagster_run.status.value) for r in records) == [
        (task, "SUCCESS") for task in TASKS
    ]
    spans = sorted((r.start_time, r.end_time) for r in records)
    assert all(later[0] >= earlier[1] - 0.5 for earlier, later in zip(spans, spans[1:])), "the queue runs one at a time"
