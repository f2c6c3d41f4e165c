"""Incremental rebuilds: an edited template makes exactly its dependents stale, and refresh rebuilds only those."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from dsc_assets_tests.conftest import private_tasks, run_cli


@pytest.fixture
def two_tasks(tmp_path):
    """sentiment and sycophancy, three train prompts each, in a private prompts folder and DSC_HOME."""
    root = private_tasks(tmp_path / "prompts", {"sentiment": 3, "sycophancy": 3})
    (tmp_path / "dagster").mkdir()
    env = {
        "DSC_PROFILE": "test",
        "DSC_PROMPTS_DIR": str(root),
        "DSC_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    return root, env, tmp_path / "home"


CHAIN = "raw_prompts,drafts,critiques,revisions"
_ROW = re.compile(r"^(\S+)\s+(\S+)\s+(?:\d+ \(\+\d+ cached\)|-)\s+(?:\d+\.\d|-)\s+(.*)$")  # calls, minutes


def _calls(home) -> int:
    with duckdb.connect(str(home / "cache.duckdb"), read_only=True) as con:
        return con.execute("SELECT count(*) FROM calls WHERE kind = 'chat'").fetchone()[0]


def _dsc(env, *args):
    result = run_cli(["dsc", *args, "--tasks", "sentiment,sycophancy", "--select", CHAIN], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _stale(plan_output: str, roots_only: bool = False) -> set[tuple[str, str]]:
    """(asset, task) rows of `dsc plan`; roots_only: stale for their own reasons, not only because of upstream."""
    stale = set()
    for line in plan_output.splitlines():
        match = _ROW.match(line)
        if match is None or match.group(1) == "asset":
            continue
        reasons = [r.strip() for r in match.group(3).split(";")]
        if not roots_only or any(not r.startswith("upstream stale") for r in reasons):
            stale.add((match.group(1), match.group(2)))
    return stale


def test_edited_revision_template_rebuilds_only_that_tasks_revisions(two_tasks, monkeypatch):
    root, env, home = two_tasks
    _dsc(env, "refresh")
    assert _calls(home) == 2 * 3 * 3  # two tasks x three prompts x (draft, critique, revision)
    assert "nothing is stale" in _dsc(env, "plan")

    task_file = root / "sentiment" / "task.yaml"
    task_file.write_text(
        task_file.read_text().replace("clearly positive about the movie", "warmly positive about the film")
    )
    planned = _dsc(env, "plan")
    assert _stale(planned) == {("revisions", "sentiment")}, planned
    assert "3 (+0 cached)" in planned  # the cost: three revisions, nothing from the cache
    # `dagster dev`'s sensor sees the same thing and asks for exactly that run
    requests = _sensor(env, monkeypatch)
    assert [(r.partition_key, [k.path[-1] for k in r.asset_selection]) for r in requests] == [
        ("sentiment", ["revisions"])
    ]

    before = _calls(home)
    _dsc(env, "refresh")
    assert _calls(home) - before == 3  # only the sentiment revisions were generated again
    assert "nothing is stale" in _dsc(env, "plan")
    assert isinstance(_sensor(env, monkeypatch), dg.SkipReason)


def _sensor(env, monkeypatch):
    """Evaluate dsc_refresh_sensor against the CLI's Dagster instance and prompts folder."""
    from dsc_assets.build.automation import dsc_refresh_sensor
    from dsc_assets.definitions import build_definitions
    from dsc_assets.lib.profiles import load_profile

    monkeypatch.setenv("DSC_PROMPTS_DIR", env["DSC_PROMPTS_DIR"])
    defs = build_definitions(load_profile("test"), Path(env["DSC_HOME"]))
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        context = dg.build_sensor_context(
            instance=instance,
            repository_def=defs.get_repository_def(),
            resources={k: defs.resources[k] for k in ("settings", "llm", "rewards", "student", "trainer")},
        )
        return dsc_refresh_sensor(context)


def test_whitespace_only_edit_stops_at_the_first_asset(two_tasks):
    root, env, home = two_tasks
    _dsc(env, "refresh")
    prompts = root / "sentiment" / "prompts.jsonl"
    reformatted = (
        "\n".join(
            json.dumps(json.loads(line), indent=None, separators=(", ", ":  "))
            for line in prompts.read_text().splitlines()
        )
        + "\n\n"
    )
    prompts.write_text(reformatted)
    planned = _dsc(env, "plan")
    # the prompts file changed, so raw_prompts must be rebuilt; the rest waits on it (stale only upstream)
    assert _stale(planned, roots_only=True) == {("raw_prompts", "sentiment")}, planned
    assert {task for _, task in _stale(planned)} == {"sentiment"}
    before = _calls(home)
    refreshed = _dsc(env, "refresh")
    rounds = [line for line in refreshed.splitlines() if line.startswith("dsc refresh: sentiment")]
    assert rounds == ["dsc refresh: sentiment: raw_prompts"], refreshed  # identical rows: the wave stops there
    assert _calls(home) == before
    assert "nothing is stale" in _dsc(env, "plan")  # identical output: drafts and the rest stay fresh


def test_adding_a_task_folder_adds_a_partition(two_tasks):
    root, env, _ = two_tasks
    code = (
        "from dsc_assets.defs.partitions import task_partitions; print(','.join(task_partitions.get_partition_keys()))"
    )
    assert run_cli(["python", "-c", code], env).stdout.strip() == "sentiment,sycophancy"
    shutil.copytree(root / "sentiment", root / "reviews")
    assert run_cli(["python", "-c", code], env).stdout.strip() == "reviews,sentiment,sycophancy"
