"""The graph's identity, against a recording: every asset spec (key, deps, group, checks and whether they block,
code version, partitions, kinds, metadata), every stage's input versions per task on the test profile, the call
cache's keys for each chain step, and the tables of the recorded data chain. Recorded from the code at f02b94b (the
flat layout, before the move to lib/defs/build/cli): a user's existing DSC_HOME and call cache stay fresh only while
these hold. A change to the graph is meant to show up here, as a diff in review; after an intended one, write the
fixtures again and commit them with the change:

    .venv/bin/python -m dsc_assets_tests.graph.test_identity --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg
import duckdb

from resources import stores
from resources.hashing import call_key, content_hash

FIXTURES = Path(__file__).resolve().parent / "fixtures"
IDENTITY, CHAIN = FIXTURES / "identity.json", FIXTURES / "recorded_chain.json"
VOLATILE = ("dataset_path", "seconds", "cached")  # where a run's files live and how long it took: not identity


def asset_specs(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    blocking = {spec.key: spec.blocking for checks in defs.asset_checks for spec in checks.check_specs}
    specs = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        specs[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "group": node.group_name,
            "code_version": node.code_version,
            "partitions": sorted(node.partitions_def.get_partition_keys()) if node.partitions_def else None,
            "checks": {c.name: blocking[c] for c in sorted(node.check_keys, key=lambda c: c.name)},
            "kinds": sorted(node.kinds),
            "materializable": node.is_materializable,
            "metadata": {k: str(v) for k, v in sorted((node.metadata or {}).items())},
        }
    return specs


def identity(defs: dg.Definitions) -> dict:
    """Asset specs, stage versions per task, and the chain's call keys for each task's first three prompts."""
    from dsc_assets.defs.inputs import Environment
    from dsc_assets.defs.stage import STAGES
    from dsc_assets.lib.almost import CONFIGS, config_messages
    from dsc_assets.lib.chat import ChainMessages
    from dsc_assets.lib.tasks import load_task, task_names

    env, model = Environment(defs.resources), defs.resources["llm"].model_identity()
    versions, calls = {}, {}
    for name in task_names():
        task = load_task(name)
        versions[name] = {
            s.name: {
                "revision": s.revision,
                "reads": list(s.reads),
                "inputs": s.input_versions(task, env),
                "version": s.version(task, env),
            }
            for s in STAGES.values()
        }
        chain, params, spec = ChainMessages(task), task.sampling_for(32), task.spec
        keys = []
        for record in task.prompts[:3]:
            requests = [
                chain.draft(record.prompt),
                chain.critique(record.prompt, "R"),
                chain.revision(record.prompt, "R", "C"),
            ]
            if spec.contrastive:
                requests += [
                    chain.contrastive(record.prompt, a)
                    for a in (spec.contrastive.positive_affix, spec.contrastive.negative_affix)
                ]
            if spec.almost:
                requests += [config_messages(task, c, record.prompt) for c in CONFIGS]
            keys.append([call_key("chat", model, m, params) for m in requests])
        calls[name] = keys
    return {"assets": asset_specs(defs), "versions": versions, "call_keys": calls}


def recorded_chain_tables(home: Path) -> dict:
    """The recorded data chain built in ``home``: rows, columns and a content hash per table."""
    from dsc_assets_tests.graph.test_fast_graph import CHAIN as ASSETS
    from dsc_assets_tests.graph.test_fast_graph import _defs, _materialize

    result = _materialize(_defs(home), dg.DagsterInstance.ephemeral())
    assert result.success
    stores.close_all()
    tables = {}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        for asset in ASSETS:
            df = con.execute(f"SELECT * FROM dsc.{asset}").df()
            stable = df[[c for c in df.columns if c not in VOLATILE]]
            tables[asset] = {"rows": len(df), "columns": list(df.columns), "hash": content_hash(stable, length=32)}
    for event in result.get_asset_materialization_events():
        if "dataset_hash" in event.materialization.metadata:
            tables[event.asset_key.path[-1]]["dataset_hash"] = event.materialization.metadata["dataset_hash"].value
    return tables


def _test_definitions(home: Path) -> dg.Definitions:
    from dsc_assets.definitions import build_definitions
    from dsc_assets.lib.profiles import load_profile

    return build_definitions(load_profile("test"), home)


def _diff(recorded: dict, now: dict, path: str = "") -> list[str]:
    if isinstance(recorded, dict) and isinstance(now, dict):
        return [
            line
            for key in sorted(set(recorded) | set(now))
            for line in _diff(recorded.get(key, "<absent>"), now.get(key, "<absent>"), f"{path}/{key}")
        ]
    return [] if recorded == now else [f"{path}: recorded {recorded!r}, now {now!r}"]


def test_asset_specs_versions_and_cache_keys_are_the_recorded_ones(dsc_home):
    differences = _diff(json.loads(IDENTITY.read_text()), identity(_test_definitions(dsc_home)))
    assert not differences, "the graph's identity moved (write the fixtures again if intended):\n" + "\n".join(
        differences[:40]
    )


def test_the_recorded_chain_writes_the_recorded_tables(dsc_home):
    differences = _diff(json.loads(CHAIN.read_text()), recorded_chain_tables(dsc_home))
    assert not differences, "the recorded chain's tables moved:\n" + "\n".join(differences[:40])


if __name__ == "__main__" and "--write" in sys.argv:
    import os
    import tempfile

    os.environ.setdefault("DSC_PROFILE", "test")
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("chain", "identity"):
            (Path(scratch) / name).mkdir()
        os.environ["DSC_HOME"] = str(Path(scratch) / "identity")
        IDENTITY.write_text(
            json.dumps(identity(_test_definitions(Path(scratch) / "identity")), indent=1, sort_keys=True)
        )
        CHAIN.write_text(json.dumps(recorded_chain_tables(Path(scratch) / "chain"), indent=1, sort_keys=True))
    print(f"wrote {IDENTITY} and {CHAIN}")
