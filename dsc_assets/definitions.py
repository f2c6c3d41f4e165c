"""The code location: assets, checks, resources from the active profile, the main job."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dsc_assets.build.automation import dsc_refresh_sensor
from dsc_assets.defs import almost, datasets, dlma, evaluation, generation, rewards, training
from dsc_assets.defs.partitions import task_partitions
from dsc_assets.defs.stage import inputs_source
from dsc_assets.lib.execution import Execution, execution_settings, forwarded_env_names
from dsc_assets.lib.profiles import (
    Profile,
    build_generator,
    build_rewards,
    build_student,
    build_trainer,
    dsc_home,
    load_profile,
    usable_home,
    warehouse_location,
)
from resources.settings import DscSettings
from resources.stores import warehouse_io_manager

GROUPS = (generation, rewards, dlma, datasets, training, almost, evaluation)  # the graph's order, one folder each

# Every stage is declared with @stage (defs/stage.py); task_inputs observes what each of them reads, per task.
all_assets = [*dg.load_assets_from_modules([group.assets for group in GROUPS]), inputs_source()]
all_checks = dg.load_asset_checks_from_modules([group.checks for group in GROUPS if hasattr(group, "checks")])


def build_job(execution: Execution):
    """dsc_job: on Ray a step whose worker died is started again (every finished call is cached, so the retry asks
    the model only for what was in flight); in process a failure is the user's to read, not to repeat."""
    retry = dg.RetryPolicy(max_retries=execution.step_retries, delay=1) if execution.on_ray else None
    return dg.define_asset_job(
        "dsc_job",
        selection=dg.AssetSelection.all(),  # materializable assets only: task_inputs is observed, not built
        partitions_def=task_partitions,
        description="The whole graph for one task (partition): prompts to data to checkpoints.",
        op_retry_policy=retry if execution.step_retries else None,
    )


def build_executor(execution: Execution) -> dg.ExecutorDefinition:
    """In-process by default (~3x faster than multiprocess on 2 cores, one loaded model per run); with
    DSC_EXECUTOR=ray each step is a Ray job on the cluster at DSC_RAY_ADDRESS (lib/execution.py)."""
    if not execution.on_ray:
        return dg.in_process_executor
    from dagster_ray import ray_executor

    ray = {"address": execution.ray_address, "num_cpus": execution.step_cpus, "env_vars": forwarded_env_names()}
    return ray_executor.configured({"ray": ray}, name="ray")


execution = execution_settings()
dsc_job = build_job(execution)


def build_resources(profile: Profile, home: Path) -> dict:
    """Every resource the graph needs, configured by a profile and rooted at a DSC_HOME."""
    usable_home(home)  # DuckDB creates files, not folders; a bad DSC_HOME is said here, not by DuckDB
    return {
        "llm": build_generator(profile, home),
        "rewards": build_rewards(profile, home),
        "student": build_student(profile, home),
        "trainer": build_trainer(profile, home),
        "settings": DscSettings(
            max_prompts_per_task=profile.max_prompts_per_task,
            max_eval_prompts_per_task=profile.max_eval_prompts_per_task,
            eval_split=profile.eval_split,
            eval_samples_per_prompt=profile.eval_samples_per_prompt,
            max_tokens_cap=profile.max_tokens_cap,
            methods=list(profile.methods),
            training_seeds=profile.training_seeds,
            training_seeds_by_task=dict(profile.training_seeds_by_task),
            second_scorers={task: scorer.model_dump_json() for task, scorer in profile.second_scorers.items()},
            quality_overrides=profile.quality_overrides,
            artifacts_dir=str(home / "artifacts"),
            ledger_path=str(home / "ledger.jsonl"),
            profile=profile.name,
            profile_sha=profile.sha(),
        ),
        "io_manager": warehouse_io_manager(warehouse_location(profile, home)),
    }


def build_definitions(profile: Profile | None = None, home: Path | None = None) -> dg.Definitions:
    profile = profile or load_profile()
    return dg.Definitions(
        assets=all_assets,
        asset_checks=all_checks,
        jobs=[dsc_job],
        sensors=[dsc_refresh_sensor],
        resources=build_resources(profile, home or dsc_home()),
        executor=build_executor(execution),
    )


def dsc_job_definition() -> dg.JobDefinition:
    """dsc_job as a module-level function, for ``dg.reconstructable``: a step on another process or machine (Ray)
    loads the job from here."""
    return defs.resolve_job_def("dsc_job")


profile = load_profile()
defs = build_definitions(profile)
