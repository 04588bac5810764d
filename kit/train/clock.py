"""Timing a training session: Clock, the loop's wall-clock bookkeeping (what a time budget is
fitted to), and StepTimer, a train() callback for benchmarks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from kit.budget import StepPlan


class StepTimer:
    """A train() callback for benchmarks: this session's training steps, the seconds they took
    without evaluations, and the wall-clock window of the loop."""

    def __init__(self):
        self.steps, self.seconds, self.window = 0, 0.0, [0.0, 0.0]
        self._evals = 0.0
        self._first_step = 0        # the step the session began at (on_train_begin)

    def on_train_begin(self, trainer) -> None:
        self.window[0], self._first_step = time.time(), trainer.state.step

    def on_evaluated(self, trainer, seconds: float) -> None:
        self._evals += seconds

    def on_train_end(self, trainer, summary: dict) -> None:
        self.window[1] = time.time()
        self.steps = trainer.state.step - self._first_step
        self.seconds = self.window[1] - self.window[0] - self._evals


@dataclass
class Clock:
    """Wall-clock bookkeeping of one session: the run's time across sessions, and the step rate
    without evaluations (what the time budget is fitted to)."""
    began: float
    seconds_before: float = 0.0
    loop_began: float = 0.0
    eval_seconds: float = 0.0
    steps_before: int = 0
    timed_from: tuple = (0.0, 0.0)          # (time, eval seconds) when the timed steps began
    cpu_began: float = 0.0                  # the process's CPU seconds when the loop began
    cpu_at_start: float = field(default_factory=time.process_time)     # ... when the session began

    def session_cores(self) -> float:
        """The CPU cores the whole session had so far, its set-up included: the process's CPU seconds per
        wall second since the clock began (what an audition's rung, timed from there, compares candidates
        on; probe 56: a candidate slowed in its set-up, or stopped before its step rate was measured,
        showed no loss in the loop's own figure)."""
        wall = time.time() - self.began
        return (time.process_time() - self.cpu_at_start) / wall if wall > 0 else 0.0

    def seconds(self) -> float:
        return self.seconds_before + time.time() - self.began

    def training_seconds(self, now: float) -> float:
        """This session's seconds of training steps up to `now`, its evaluations left out."""
        return now - self.loop_began - self.eval_seconds

    def begin_loop(self, step: int) -> None:
        self.loop_began, self.steps_before, self.cpu_began = time.time(), step, time.process_time()

    def step_rates(self, plan: StepPlan, step: int, on_cpu: bool) -> dict:
        """A timed run's step rate as measured at its start (what its plan was first fitted to) and
        as achieved over this session up to `step`, evaluations left out: a machine shared part way
        shows as the gap (kit.budget.step_rate_note). On a CPU also the cores it had: the process's
        CPU seconds per wall second of the loop, which shows a machine shared from the start too."""
        now = time.time()
        seconds = self.training_seconds(now)
        steps = step - self.steps_before
        rates = {"probed": plan.probe_rate, "achieved": steps / seconds if seconds > 0 else 0.0,
                 "planned_steps": plan.probe_total, "step": step}
        if on_cpu and now > self.loop_began:
            rates["cpu_cores"] = (time.process_time() - self.cpu_began) / (now - self.loop_began)
        return rates
