"""Incremental rebuilds: an edited template makes exactly its dependents stale, and refresh rebuilds only those."""

from __future__ import annotations

import json
import re
import shutil

from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from dsc_assets_tests.conftest import private_tasks, run_cli

CHAIN = "raw_prompts,drafts,critiques,revisions"


@pytest.fixture
def two_tasks(tmp_path):
    """sentiment and sycophancy, three train prompts each, in a private prompts folder and DSC_HOME."""
    root = private_tasks(tmp_path / "prompts", {"sentiment": 3, "sycophancy": 3})
    (tmp_path / "dagster").mkdir()
    env = {"DSC_PROFILE": "test", "DSC_PROMPTS_DIR": str(root), "DSC_HOME": str(tmp_path / "home"),
           "DAGSTER_HOME": str(tmp_path / "dagster")}
    return root, env, tmp_path / "home"


def _calls(home) -> int:
    with duckdb.connect(str(home / "cache.duckdb"), read_only=True) as con:
        return con.execute("SELECT count(*) FROM calls WHERE kind = 'chat'").fetchone()[0]


def _dsc(env, *args):
    result = run_cli(["dsc", *args, "--tasks", "sentiment,sycophancy", "--select", CHAIN], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


_ROW = re.compile(r"^(\S+)\s+(\S+)\s+(?:\d+ \(\+\d+ cached\)|-)\s+(.*)$")


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
    task_file.write_text(task_file.read_text().replace("clearly positive about the movie", "warmly positive about the film"))
    planned = _dsc(env, "plan")
    assert _stale(planned) == {("revisions", "sentiment")}, planned
    assert "3 (+0 cached)" in planned  # the cost: three revisions, nothing from the cache
    # `dagster dev`'s sensor sees the same thing and asks for exactly that run
    requests = _sensor(env, monkeypatch)
    assert [(r.partition_key, [k.path[-1] for k in r.asset_selection]) for r in requests] == [("sentiment", ["revisions"])]

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
        context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def(),
                                          resources={k: defs.resources[k] for k in ("settings", "llm", "rewards", "student", "trainer")})
        return dsc_refresh_sensor(context)


def test_whitespace_only_edit_stops_at_the_first_asset(two_tasks):
    root, env, home = two_tasks
    _dsc(env, "refresh")
    prompts = root / "sentiment" / "prompts.jsonl"
    reformatted = "\n".join(json.dumps(json.loads(line), indent=None, separators=(", ", ":  "))
                            for line in prompts.read_text().splitlines()) + "\n\n"
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
    code = "from dsc_assets.defs.partitions import task_partitions; print(','.join(task_partitions.get_partition_keys()))"
    assert run_cli(["python", "-c", code], env).stdout.strip() == "sentiment,sycophancy"
    shutil.copytree(root / "sentiment", root / "reviews")
    assert run_cli(["python", "-c", code], env).stdout.strip() == "reviews,sentiment,sycophancy"


def test_sensor_requests_nothing_below_a_failed_blocking_check(tmp_path, monkeypatch, capsys):
    """A failed blocking check stops the sensor below it: the critique template of both tasks changed, but
    sentiment's drafts failed drafts_quality, so only sycophancy's critiques are requested (plan says why)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    from dsc_assets.build.automation import refresh_requests
    from dsc_assets.cli.plan import _nothing_to_rebuild
    from dsc_assets.definitions import build_definitions
    from dsc_assets.lib.profiles import load_profile
    from dsc_assets.build.staleness import plan
    from dsc_assets_tests.test_staleness_table import TASKS, _copy_prompts, _record_built

    _copy_prompts(tmp_path / "prompts")
    monkeypatch.setenv("DSC_PROMPTS_DIR", str(tmp_path / "prompts"))
    profile, home = load_profile("test"), tmp_path / "home"
    defs = build_definitions(profile, home)
    with dg.DagsterInstance.ephemeral() as instance:
        _record_built(instance, profile, home)
        drafts = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("drafts"), asset_partitions=["sentiment"]), limit=1).records[0]
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("drafts"), check_name="drafts_quality", passed=False, partition="sentiment",
            target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
                storage_id=drafts.storage_id, run_id=drafts.run_id, timestamp=drafts.timestamp)))
        for task in TASKS:
            task_file = tmp_path / "prompts" / task / "task.yaml"
            spec = yaml.safe_load(task_file.read_text())
            spec["critique_template"] = "Name one flaw of this answer: {response}"
            task_file.write_text(yaml.safe_dump(spec))

        requests = refresh_requests(defs.resolve_asset_graph(), instance, defs.resources, TASKS)
        assert [(r.partition_key, [k.path[-1] for k in r.asset_selection]) for r in requests] == \
            [("sycophancy", ["critiques"])]
        critiques = next(e for e in plan(defs, instance, TASKS) if (e.asset, e.task) == ("critiques", "sentiment"))
        assert "blocked by failed check drafts_quality on drafts" in critiques.reasons and not critiques.root
        # `dsc refresh` on sentiment alone has nothing it may rebuild: it says what waits on which check, and fails.
        assert _nothing_to_rebuild(plan(defs, instance, ["sentiment"])) == 1
        said = capsys.readouterr().err
        assert "sentiment: critiques: blocked by failed check drafts_quality on drafts" in said
        assert "nothing is stale" not in said

        # The check passes again on a new drafts materialization: the block is lifted.
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "drafts", partition="sentiment", metadata=drafts.event_log_entry.asset_materialization.metadata,
            tags=drafts.event_log_entry.asset_materialization.tags))
        requests = refresh_requests(defs.resolve_asset_graph(), instance, defs.resources, TASKS)
        assert sorted(r.partition_key for r in requests) == ["sentiment", "sycophancy"]
        assert _nothing_to_rebuild([e for e in plan(defs, instance, TASKS) if not e.root]) == 0
        assert capsys.readouterr().out.strip() == "dsc refresh: nothing is stale"
