"""Incremental rebuilds: an edited template makes exactly its dependents stale, and refresh rebuilds only those."""

from __future__ import annotations

import dagster as dg
import yaml


def test_sensor_requests_nothing_below_a_failed_blocking_check(tmp_path, monkeypatch, capsys):
    """A failed blocking check stops the sensor below it: the critique template of both tasks changed, but
    sentiment's drafts failed drafts_quality, so only sycophancy's critiques are requested (plan says why)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    from dsc_assets.build.automation import refresh_requests
    from dsc_assets.build.staleness import plan
    from dsc_assets.cli.plan import _nothing_to_rebuild
    from dsc_assets.definitions import build_definitions
    from dsc_assets.lib.profiles import load_profile
    from dsc_assets_tests.graph.test_staleness_table import TASKS, _copy_prompts, _record_built

    _copy_prompts(tmp_path / "prompts")
    monkeypatch.setenv("DSC_PROMPTS_DIR", str(tmp_path / "prompts"))
    profile, home = load_profile("test"), tmp_path / "home"
    defs = build_definitions(profile, home)
    with dg.DagsterInstance.ephemeral() as instance:
        _record_built(instance, profile, home)
        drafts = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("drafts"), asset_partitions=["sentiment"]), limit=1
        ).records[0]
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey("drafts"),
                check_name="drafts_quality",
                passed=False,
                partition="sentiment",
                target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
                    storage_id=drafts.storage_id, run_id=drafts.run_id, timestamp=drafts.timestamp
                ),
            )
        )
        for task in TASKS:
            task_file = tmp_path / "prompts" / task / "task.yaml"
            spec = yaml.safe_load(task_file.read_text())
            spec["critique_template"] = "Name one flaw of this answer: {response}"
            task_file.write_text(yaml.safe_dump(spec))

        requests = refresh_requests(defs.resolve_asset_graph(), instance, defs.resources, TASKS)
        assert [(r.partition_key, [k.path[-1] for k in r.asset_selection]) for r in requests] == [
            ("sycophancy", ["critiques"])
        ]
        critiques = next(e for e in plan(defs, instance, TASKS) if (e.asset, e.task) == ("critiques", "sentiment"))
        assert "blocked by failed check drafts_quality on drafts" in critiques.reasons and not critiques.root
        # `dsc refresh` on sentiment alone has nothing it may rebuild: it says what waits on which check, and fails.
        assert _nothing_to_rebuild(plan(defs, instance, ["sentiment"])) == 1
        said = capsys.readouterr().err
        assert "sentiment: critiques: blocked by failed check drafts_quality on drafts" in said
        assert "nothing is stale" not in said

        # The check passes again on a new drafts materialization: the block is lifted.
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                "drafts",
                partition="sentiment",
                metadata=drafts.event_log_entry.asset_materialization.metadata,
                tags=drafts.event_log_entry.asset_materialization.tags,
            )
        )
        requests = refresh_requests(defs.resolve_asset_graph(), instance, defs.resources, TASKS)
        assert sorted(r.partition_key for r in requests) == ["sentiment", "sycophancy"]
        assert _nothing_to_rebuild([e for e in plan(defs, instance, TASKS) if not e.root]) == 0
        assert capsys.readouterr().out.strip() == "dsc refresh: nothing is stale"
