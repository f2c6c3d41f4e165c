"""The shared deployment's Dagster instance on a real PostgreSQL server: `dsc run` with DSC_INSTANCE_URL (and the
call cache on DSC_CACHE_URL) writes a dagster.yaml with `storage: postgres`, and the run, its materializations and
the calls it made are read back from PostgreSQL, not from files under DAGSTER_HOME or DSC_HOME."""

from __future__ import annotations

import os

import dagster as dg
import psycopg2
import pytest
import yaml

from dsc_assets_tests.conftest import PROJECT_ROOT, run_cli
from resources.pg_cache import PostgresCallCache


def test_a_run_on_the_shared_instance_is_recorded_in_postgres(postgres_server, tmp_path):
    instance_url = postgres_server.create_database(f"dagster_{os.getpid()}")
    cache_url = postgres_server.create_database(f"cache_{os.getpid()}")
    dagster_home, home = tmp_path / "dagster_home", tmp_path / "home"
    dagster_home.mkdir()
    env = {
        "DSC_PROFILE": "test",
        "DSC_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "DSC_INSTANCE_URL": instance_url,
        "DSC_CACHE_URL": cache_url,
    }
    done = run_cli(["dsc", "run", "--tasks", "sentiment", "--select", "raw_prompts,drafts"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "materialized: raw_prompts, drafts" in done.stdout

    config = yaml.safe_load((dagster_home / "dagster.yaml").read_text())
    assert config["storage"] == {"postgres": {"postgres_url": instance_url.replace("://", "+psycopg2://")}}
    assert not (dagster_home / "history").exists() and not list(dagster_home.rglob("*.db"))  # no SQLite storage
    assert not (home / "cache.duckdb").exists()

    # Another machine reads the same history: an instance built from the same file, in this process.
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs()
        assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]
        assert runs[0].tags["dagster/partition"] == "sentiment"
        for asset in ("raw_prompts", "drafts"):
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event is not None and event.run_id == runs[0].run_id
        rows = event.asset_materialization.metadata["dagster/partition_row_count"].value
    with psycopg2.connect(instance_url) as connection, connection.cursor() as cursor:  # the tables themselves
        cursor.execute("SELECT run_id, status FROM runs")
        assert cursor.fetchall() == [(runs[0].run_id, "SUCCESS")]
    connection.close()
    assert PostgresCallCache(cache_url).count("chat") == rows == 4  # every draft's call, in the shared cache
    # `dsc plan` from another DAGSTER_HOME (another machine) with the same URLs sees the run: nothing is stale.
    elsewhere = {**env, "DAGSTER_HOME": str(tmp_path / "other_dagster_home")}
    (tmp_path / "other_dagster_home").mkdir()
    planned = run_cli(["dsc", "plan", "--tasks", "sentiment", "--select", "raw_prompts,drafts"], elsewhere)
    assert planned.returncode == 0 and "nothing is stale" in planned.stdout, planned.stdout + planned.stderr
    embedded = {k: v for k, v in elsewhere.items() if k != "DSC_INSTANCE_URL"}  # its own SQLite: no history
    planned = run_cli(["dsc", "plan", "--tasks", "sentiment", "--select", "raw_prompts,drafts"], embedded)
    assert "nothing is stale" not in planned.stdout and "drafts" in planned.stdout, planned.stdout


def test_a_profile_asks_for_the_shared_instance(tmp_path, monkeypatch):
    """``shared.instance_url`` in a profile: the URL is written into the instance file; a profile without it keeps
    the embedded SQLite instance; a URL with a password is refused (it would be written into the file)."""
    from dsc_assets.cli.common import UsageError, prepare_environment

    profile = yaml.safe_load((PROJECT_ROOT / "profiles" / "test.yaml").read_text())
    profile["shared"] = {"instance_url": "postgresql://dsc@db.internal:5432/dagster"}
    (tmp_path / "shared.yaml").write_text(yaml.safe_dump(profile))
    monkeypatch.setenv("DSC_PROFILE", "test")  # prepare_environment sets it; restored after the test
    monkeypatch.setenv("DSC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("DSC_INSTANCE_URL", raising=False)
    prepare_environment(str(tmp_path / "shared.yaml"))
    config = yaml.safe_load((tmp_path / "dagster_home" / "dagster.yaml").read_text())
    assert config["storage"]["postgres"]["postgres_url"] == "postgresql+psycopg2://dsc@db.internal:5432/dagster"
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 1
    prepare_environment("test")
    assert "storage" not in yaml.safe_load((tmp_path / "dagster_home" / "dagster.yaml").read_text())
    monkeypatch.setenv("DSC_INSTANCE_URL", "postgresql://dsc:secret@db.internal/dagster")
    with pytest.raises(UsageError, match="holds a password.*PGPASSWORD"):
        prepare_environment("test")
    assert "secret" not in (tmp_path / "dagster_home" / "dagster.yaml").read_text()
