"""Where a run's steps execute and how many runs the queue admits at once: deployment, not what a run builds, so it is
read from the environment (not the profile, whose hash the ledger records) and changes no asset, key or code version.

- ``DSC_EXECUTOR``: ``in_process`` (the default: every step in the run's process, one loaded model per run) or
  ``ray`` (each step is a Ray job on an existing cluster, through dagster-ray's ``ray_executor``).
- ``DSC_RAY_ADDRESS``: the cluster's job-submission (dashboard) address, e.g. ``http://127.0.0.1:8265``; unset: Ray's
  own ``RAY_ADDRESS``, then ``auto`` (a cluster started on this machine).
- ``DSC_RAY_STEP_CPUS``: the CPUs each step reserves on the cluster (default 1): what keeps two steps off one core.
- ``DSC_STEP_RETRIES``: on Ray, how often a step whose worker died (or that failed) is started again (default 2).
- ``DSC_MAX_CONCURRENT_RUNS``: the instance's run queue (UI launches, backfills): runs at once (default 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

EXECUTORS = ("in_process", "ray")
# What a step's process on a Ray worker must see as the launching process did: dsc's settings, the instance, offline
# switches, threads. A name not set here is not sent.
FORWARDED = ("DAGSTER_HOME", "PYTHONPATH", "OMP_WAIT_POLICY", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HOME")


class ExecutionError(ValueError):
    """A DSC_EXECUTOR / DSC_RAY_* / DSC_MAX_CONCURRENT_RUNS value that cannot be used: names it and the fix."""


@dataclass(frozen=True)
class Execution:
    executor: str = "in_process"
    ray_address: str = "auto"
    step_cpus: float = 1.0
    step_retries: int = 2
    max_concurrent_runs: int = 1

    @property
    def on_ray(self) -> bool:
        return self.executor == "ray"


def execution_settings(environ: Mapping[str, str] | None = None) -> Execution:
    """The deployment's execution settings from ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    executor = env.get("DSC_EXECUTOR", "").strip() or "in_process"
    if executor not in EXECUTORS:
        raise ExecutionError(f"DSC_EXECUTOR={executor!r} is not an executor; use one of {', '.join(EXECUTORS)}")
    address = env.get("DSC_RAY_ADDRESS", "").strip() or env.get("RAY_ADDRESS", "").strip() or "auto"
    return Execution(
        executor=executor,
        ray_address=address,
        step_cpus=_number(env, "DSC_RAY_STEP_CPUS", 1.0, float, minimum=0.0),
        step_retries=_number(env, "DSC_STEP_RETRIES", 2, int, minimum=0),
        max_concurrent_runs=_number(env, "DSC_MAX_CONCURRENT_RUNS", 1, int, minimum=1),
    )


def _number(env: Mapping[str, str], name: str, default, kind, minimum):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ExecutionError(f"{name}={raw!r} must be a {'whole ' if kind is int else ''}number >= {minimum}")
    return value


def forwarded_env_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """The variables a step on a Ray worker gets from the launching process: every DSC_* and those in FORWARDED."""
    env = os.environ if environ is None else environ
    return sorted(name for name in env if name.startswith("DSC_") or name in FORWARDED)
