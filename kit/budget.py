"""Step budgets: the learning-rate schedule, and how many steps fit in a wall-clock allowance.

A run given `train.minutes` measures its own step rate (after a few warm-up steps, then again
as it goes) and sets its step total so that warm-up, cosine decay and the evaluations all end
inside the allowance: a time-limited run ends annealed, not cut off at its peak learning rate.
How a recipe's minutes are shared among its members and stages is kit.timeplan's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

EVALS = 4              # evaluations over a time-budgeted run (the last one at its final step)
SKIP_STEPS = 3         # first steps of a session, not timed (allocator and caches warm up)
PROBE_STEPS = 20       # steps timed before the first fit
REFIT_EVERY = 50       # steps between later fits: the rate follows the machine's load
RESERVE = 0.02         # share of the allowance kept for the end (summary, plots, averaging)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up from 0, then cosine to 0 at `total`; step counts from 1 (the update about
    to happen), so neither the first nor the last update runs at lr 0. The same values as timm's
    CosineLRScheduler(t_initial=total + 1, warmup_t=warmup, warmup_lr_init=0) that kit used before."""
    if step < warmup:
        return step * (base / warmup)
    t_initial = total + 1
    if step >= t_initial:
        return 0.0
    return 0.5 * base * (1 + math.cos(math.pi * step / t_initial))


@dataclass
class StepPlan:
    """Where a run is going: its step total, warm-up and when it evaluates.

    Without a time budget the plan is fixed (`train.max_steps`, `train.eval_every`); with one,
    `fit` moves `total` (never below the next step, never above `train.max_steps`) and the
    evaluations fall at equal fractions of it."""
    total: int
    warmup: int
    eval_every: int
    seconds: float = 0.0          # > 0: the wall-clock allowance this plan is fitted to
    max_steps: int = 0
    warmup_cfg: int = 0
    evals_done: int = 0
    eval_seconds: float = 0.0     # measured cost of one evaluation (0 until the first)
    evals: int = EVALS            # evaluations over a timed run (the last at its final step)
    probe_rate: float = 0.0       # steps/s measured at the first fit, and the total it planned then:
    probe_total: int = 0          # what the run expected of the machine before anything changed

    @classmethod
    def fixed(cls, total: int, warmup: int, eval_every: int) -> StepPlan:
        return cls(total=total, warmup=min(warmup, total), eval_every=eval_every)

    @classmethod
    def timed(cls, seconds: float, max_steps: int, warmup: int, total: int | None = None,
              evals_done: int = 0, evals: int = EVALS) -> StepPlan:
        total = total or max_steps
        plan = cls(total=total, warmup=min(warmup, total), eval_every=0, seconds=seconds, max_steps=max_steps,
                   warmup_cfg=warmup, evals_done=evals_done, evals=max(1, evals))
        plan.set_total(total)
        return plan

    @property
    def is_timed(self) -> bool:
        return self.seconds > 0

    def set_total(self, total: int) -> None:
        """A new step total (at most train.max_steps); the warm-up follows it, because a warm-up
        longer than a tenth of a short run would spend the run at low learning rates."""
        self.total = int(min(total, self.max_steps))
        self.warmup = max(1, min(self.warmup_cfg, self.total // 10)) if self.warmup_cfg > 0 else 0

    def eval_due(self, step: int) -> bool:
        if step >= self.total:
            return True
        if not self.is_timed:
            return step % self.eval_every == 0
        return step >= math.ceil(self.total * (self.evals_done + 1) / self.evals)

    def fit_due(self, session_steps: int) -> bool:
        """Whether to re-measure now: after the probe, then every REFIT_EVERY steps."""
        timed_steps = session_steps - SKIP_STEPS
        return self.is_timed and timed_steps >= PROBE_STEPS and \
            (timed_steps - PROBE_STEPS) % REFIT_EVERY == 0

    def fit(self, step: int, spent: float, step_seconds: float, eval_guess: float) -> int:
        """Set the total from the allowance left: `spent` seconds used so far (all sessions),
        `step_seconds` per training step as measured, an evaluation costing what the last one
        did (or `eval_guess` before the first). Returns the new total."""
        eval_cost = self.eval_seconds or eval_guess
        evals_left = max(1, self.evals - self.evals_done)
        left = self.seconds * (1 - RESERVE) - spent - evals_left * eval_cost
        fitted = step + int(max(0.0, left) / max(step_seconds, 1e-9))
        self.set_total(max(fitted, step + 1))
        if not self.probe_rate:
            self.probe_rate, self.probe_total = 1 / max(step_seconds, 1e-9), self.total
        return self.total

    def evaluated(self, seconds: float) -> None:
        self.evals_done += 1
        self.eval_seconds = seconds if not self.eval_seconds else 0.5 * (self.eval_seconds + seconds)

    def state_dict(self) -> dict:
        return {"total": self.total, "evals_done": self.evals_done, "eval_seconds": self.eval_seconds,
                "probe_rate": self.probe_rate, "probe_total": self.probe_total}

    def load_state_dict(self, state: dict) -> None:
        if self.is_timed and state:
            self.set_total(state["total"])
            self.evals_done, self.eval_seconds = int(state["evals_done"]), float(state["eval_seconds"])
            self.probe_rate = float(state.get("probe_rate", 0.0))       # absent in older checkpoints
            self.probe_total = int(state.get("probe_total", 0))


SHARED_BELOW = 0.8      # achieved / measured-at-start step rate under which a run says it lost steps


SHARED_CORES = 0.7      # CPU seconds per wall second under which a CPU run had less than one core of its own


def step_rate_note(rates: dict | None) -> str:
    """'' or one warning for a time-budgeted run that lost steps to another process (summary.json's
    steps_per_second): it trained well below the step rate measured at its start (a machine shared
    part way), or, on a CPU, had less than one core (shared from the start, when the rate measured
    then was already low). The recipe's table and `kit report` show it."""
    if not isinstance(rates, dict):
        return ""
    given = {key: rates.get(key, default) for key, default in
             (("probed", 0), ("achieved", 0), ("step", -1), ("planned_steps", 0), ("cpu_cores", None))}
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
               for v in given.values()):        # a summary.json edited or damaged by hand: no note
        return ""
    probed, achieved, planned = given["probed"] or 0, given["achieved"] or 0, given["planned_steps"] or 0
    if probed <= 0 or achieved <= 0:
        return ""
    notes = []
    ratio = achieved / probed
    step = given["step"] if given["step"] is not None else -1
    if ratio < SHARED_BELOW and step < planned:                         # steps it did not do
        notes.append(f"{achieved:.1f} steps/s against {probed:.1f} at its start "
                     f"({math.floor(100 * ratio)}%; {int(planned):,} steps planned then)")
    cores = given["cpu_cores"]
    if cores is not None and cores < SHARED_CORES:
        notes.append(f"{cores:.2f} of a CPU core (CPU time / wall time)")
    return f"lost steps: {'; '.join(notes)} - was the machine shared?" if notes else ""


def lost_time_note(summary: dict, minutes: float) -> str:
    """'' or what `kit train` warns of a time-budgeted run: steps lost to another process
    (step_rate_note), or a run well past its minutes (its first steps, which set the plan, ran slow)."""
    note = step_rate_note(summary.get("steps_per_second"))
    seconds = summary.get("seconds")
    if minutes > 0 and isinstance(seconds, (int, float)) and seconds > 1.5 * 60 * minutes + 30:
        note = f"{note}; " if note else ""
        note += (f"took {seconds / 60:.1f} minutes against its {minutes:g} (its first steps, which set the "
                 "plan, ran slow: was the machine shared?)")
    return note
