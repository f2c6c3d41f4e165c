"""The one place that decides how many threads llama.cpp gets, and how its idle threads wait.

Imported at the top of every module that loads llama.cpp (resources/llm.py, resources/rewards.py), so the OpenMP
wait policy is in the environment before ``llama_cpp`` (and with it GNU OpenMP) is first loaded: libgomp reads
``OMP_WAIT_POLICY`` once, when it starts. Busy-waiting threads cost 5-15x on a machine where anything else runs
(measured: a 128-token answer took 30-90 s instead of ~6 s beside other work).
"""

from __future__ import annotations

import os

THREADS_ENV = "DSC_LLAMA_THREADS"

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which taskset, cgroups' cpusets and CI runners set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def llama_threads(requested: int = 0) -> int:
    """Threads for one llama.cpp context: ``requested`` if > 0, else ``$DSC_LLAMA_THREADS`` if set, else every usable
    core; never more than the usable cores (more threads than cores spin on barriers: 0.3 tok/s measured instead of
    13-20). The pipeline decodes with one context at a time per process (see ``decode_lock`` in llm.py), so all
    cores is the right default; set DSC_LLAMA_THREADS when something else (training, a second process) shares them."""
    cores = usable_cores()
    if requested <= 0:
        from_env = os.environ.get(THREADS_ENV, "").strip()
        if from_env:
            try:
                requested = int(from_env)
            except ValueError:
                raise ValueError(
                    f"{THREADS_ENV}={from_env!r}: expected a whole number of threads (0: all cores)"
                ) from None
    if requested <= 0:
        return cores
    return min(requested, cores)
