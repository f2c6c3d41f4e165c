"""Where steps run and how many runs the queue admits come from the environment (lib/execution.py): the default is
the in-process executor with no retry policy, and DSC_EXECUTOR=ray gives dagster-ray's executor and a RetryPolicy."""

from __future__ import annotations

import pytest

from dsc_assets.lib.execution import ExecutionError, execution_settings, forwarded_env_names


def test_the_default_is_in_process_one_run_at_a_time():
    settings = execution_settings({})
    assert (settings.executor, settings.max_concurrent_runs, settings.on_ray) == ("in_process", 1, False)


def test_ray_settings_and_their_fallbacks():
    settings = execution_settings({"DSC_EXECUTOR": "ray", "RAY_ADDRESS": "http://head:8265", "DSC_STEP_RETRIES": "0"})
    assert (settings.on_ray, settings.ray_address, settings.step_retries, settings.step_cpus) == (
        True,
        "http://head:8265",
        0,
        1.0,
    )
    assert execution_settings({"DSC_EXECUTOR": "ray"}).ray_address == "auto"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DSC_EXECUTOR", "celery", "in_process, ray"),
        ("DSC_MAX_CONCURRENT_RUNS", "0", ">= 1"),
        ("DSC_MAX_CONCURRENT_RUNS", "two", "whole number"),
        ("DSC_RAY_STEP_CPUS", "-1", ">= 0.0"),
    ],
)
def test_a_bad_value_is_named_with_what_it_takes(name, value, says):
    with pytest.raises(ExecutionError, match=f"{name}='{value}'.*{says}"):
        execution_settings({name: value})


def test_a_step_on_a_worker_gets_dsc_settings_and_the_instance_not_everything():
    env = {"DSC_PROFILE": "test", "DAGSTER_HOME": "/d", "SECRET_TOKEN": "x", "PYTHONPATH": "/p"}
    assert forwarded_env_names(env) == ["DAGSTER_HOME", "DSC_PROFILE", "PYTHONPATH"]


def test_definitions_executor_and_retry_policy_follow_the_setting():
    import dagster as dg

    from dsc_assets.definitions import build_executor, build_job, defs

    in_process = execution_settings({})
    assert build_executor(in_process) is dg.in_process_executor
    assert defs.resolve_job_def("dsc_job").executor_def is dg.in_process_executor  # this process: no DSC_EXECUTOR
    assert build_job(in_process).op_retry_policy is None
    on_ray = execution_settings({"DSC_EXECUTOR": "ray", "DSC_RAY_ADDRESS": "http://127.0.0.1:8265"})
    assert build_executor(on_ray).name == "ray"
    assert build_job(on_ray).op_retry_policy == dg.RetryPolicy(max_retries=2, delay=1)
