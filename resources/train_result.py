"""What a training returns, how its steps are timed, and the error for data with nothing left to train on."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class NothingToTrain(ValueError):
    """Every row was filtered out before the first step: the message says which rule dropped them and the fix."""


@dataclass
class TrainResult:
    output_dir: str
    adapter_dir: str
    merged_dir: str
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    samples_per_s: float = 0.0
    precision: str = "float32"  # the dtype it ran in (trainer.dtype with auto decided)
    step_seconds: float = 0.0  # median seconds per optimizer step, setup and saving left out


def step_timer():
    """A transformers callback timing each optimizer step (built on first use: importing transformers costs
    seconds)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.durations: list[float] = []
            self._started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.durations.append(time.perf_counter() - self._started)

    return StepTimer()


def step_seconds(trainer) -> float:
    timer = next((c for c in trainer.callback_handler.callbacks if hasattr(c, "durations")), None)
    if timer is None or not timer.durations:
        return 0.0
    durations = sorted(timer.durations[1:] or timer.durations)  # the first step selects kernels
    return round(durations[len(durations) // 2], 3)
