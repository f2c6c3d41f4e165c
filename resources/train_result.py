"""What a training returns, how its steps are timed, and the error for data with nothing left to train on."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable

# Where a training reports its progress (the asset's run log): set by the caller around ``train()``; None: silent.
TRAINING_PROGRESS: ContextVar[Callable[[str], None] | None] = ContextVar("training_progress", default=None)
PROGRESS_EVERY_S = 30.0  # a line at the first logged loss, then every 30 s, and at the last step


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
            self._started = self._reported = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.durations.append(time.perf_counter() - self._started)

        def on_log(self, args, state, control, logs=None, **kwargs):
            """After a step's loss is logged: a progress line at the first, every 30 s, and at the last."""
            report, now = TRAINING_PROGRESS.get(), time.perf_counter()
            if report is None or not self.durations or "loss" not in (logs or {}):
                return
            first, last = not self._reported, state.global_step >= state.max_steps
            if first or last or now - self._reported >= PROGRESS_EVERY_S:
                self._reported = now
                report(progress_line(state.global_step, state.max_steps, self.durations, state.log_history))

    return StepTimer()


def progress_line(step: int, steps: int, durations: list[float], history: list[dict]) -> str:
    """``step 12/64, loss 1.234, 2.10 s/step, ~1.8 min left`` (the loss: the latest logged)."""
    losses = [entry["loss"] for entry in history if "loss" in entry]
    recent = sorted(durations[-8:])
    per_step = recent[len(recent) // 2]
    loss = f", loss {losses[-1]:.3f}" if losses else ""
    return f"step {step}/{steps}{loss}, {per_step:.2f} s/step, ~{per_step * (steps - step) / 60:.1f} min left"


def step_seconds(trainer) -> float:
    timer = next((c for c in trainer.callback_handler.callbacks if hasattr(c, "durations")), None)
    if timer is None or not timer.durations:
        return 0.0
    durations = sorted(timer.durations[1:] or timer.durations)  # the first step selects kernels
    return round(durations[len(durations) // 2], 3)
