"""Step budgets: the learning-rate schedule, and how many steps fit in a wall-clock allowance.

A run given `train.minutes` measures its own step rate (after a few warm-up steps, then again
as it goes) and sets its step total so that warm-up, cosine decay and the evaluations all end
inside the allowance: a time-limited run ends annealed, not cut off at its peak learning rate.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from kit.errors import KitError

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


def step_rate_note(rates: dict | None) -> str:
    """'' or one warning for a time-budgeted run that trained well below the step rate measured at
    its start (summary.json's steps_per_second): another process took the cores, and the steps
    the plan expected were lost. The table's note column shows it."""
    if not rates or rates.get("probed", 0) <= 0 or rates.get("achieved", 0) <= 0:
        return ""
    ratio = rates["achieved"] / rates["probed"]
    if ratio >= SHARED_BELOW:
        return ""
    return (f"lost steps: {rates['achieved']:.1f} steps/s against {rates['probed']:.1f} at its start "
            f"({ratio:.0%}; {rates.get('planned_steps', 0):,} steps planned then) - was the machine shared?")


# ---------------------------------------------------------------- a recipe's wall time, shared
def member_minutes(total_minutes: float, spent_seconds: float, n_jobs: int, n_slots: int,
                   predict_seconds: float = 0.0, floor: bool = False) -> float:
    """Training minutes per member so that the whole recipe fits `total_minutes` of wall time:
    what is left after `spent_seconds`, less the end (ensemble, report, submission), shared by
    the members that train `n_slots` at a time, less each member's start-up and its prediction
    (`predict_seconds`, see predict_seconds()). floor: never refuse, give at least 10 seconds
    (a member starting late in a running recipe)."""
    left = total_minutes * 60 - spent_seconds - AFTER_SECONDS
    rounds = -(-n_jobs // n_slots)                      # members one after another in a slot
    per_member = left / rounds - START_SECONDS - predict_seconds
    if floor:
        per_member = max(per_member, 10.0)
    elif per_member < 10:
        raise KitError(f"--minutes {total_minutes:g}: too little time for {n_jobs} member(s) "
                       f"{n_slots} at a time; give more minutes or fewer members (--only)")
    return per_member / 60


def predict_seconds(store, val_fraction: float, on_gpu: bool) -> float:
    """What predicting one member costs on one CPU core: validation twice (whole utterances and
    sliding windows, to choose between them) and the test set once. Measured on the hard preset
    (1,000 validation and 2,000 test utterances, ~2 M frames predicted per member): 27-118 s per
    member, 62 s on average, ~31 s per million frames; a GPU's is taken as negligible."""
    if on_gpu:
        return 0.0
    import numpy as np

    train_frames = float(np.sum(store.lengths[store.train_index]))
    test_frames = float(np.sum(store.lengths[store.test_index]))
    return PREDICT_SECONDS_PER_MFRAME * (2 * val_fraction * train_frames + test_frames) / 1e6


# What a member costs besides training, measured on the 2-core CPU (hard preset, quick budget):
START_SECONDS = 8                  # a worker process: python, torch and kit imports, data mapped
PREDICT_SECONDS_PER_MFRAME = 35    # prediction, seconds per million frames (see predict_seconds)
AFTER_SECONDS = 20                 # the ensemble (cross-fitted), the report and its plot, a local submission
# --max-hours: room kept, as a share of the training time a member is given, for what follows its
# stop (the last evaluation and checkpoint) and for error in the estimates (predict_seconds
# takes a GPU's prediction as negligible); a guess on the safe side.
STOP_SHARE = 0.15
MIN_MEMBER_SECONDS = 60    # a member that would get less training time than this is not started


class Deadline:
    """`--max-hours`: the wall-clock time by which the command must be done (a notebook session's
    end). Each member starting is given train.max_minutes so that it checkpoints and stops before
    it, with time left for the predictions and the recipe's end; one that would get less than
    MIN_MEMBER_SECONDS is not started. The run dirs then resume on the next session's re-run."""

    def __init__(self, hours: float, began: float, own: dict[str, float] | None = None,
                 predict: float = 0.0):
        self.at = began + hours * 3600
        self.own = own or {}               # member -> its own train.max_minutes (0: none)
        self.predict = predict             # seconds to predict one member (predict_seconds)
        self.not_started: list[str] = []

    def seconds_left(self) -> float:
        return self.at - time.time()

    def member_minutes(self, name: str, log, predictions: int = 1) -> float | None:
        """train.max_minutes for member `name` starting now, leaving time for `predictions` members'
        prediction; None (and a line) when too little is left."""
        reserve = AFTER_SECONDS + START_SECONDS + predictions * self.predict
        train_seconds = (self.seconds_left() - reserve) * (1 - STOP_SHARE)
        if train_seconds < MIN_MEMBER_SECONDS:
            log(f"{name}: not started, {max(self.seconds_left(), 0) / 60:.1f} min are left before the "
                "--max-hours deadline; re-run the same command (next session) to continue")
            return None
        own = self.own.get(name, 0.0)
        minutes = min(own, train_seconds / 60) if own > 0 else train_seconds / 60
        log(f"{name}: --max-hours: trains at most {minutes:.1f} min, then checkpoints and stops")
        return minutes

    def time_for_after(self, seconds_needed: float) -> bool:
        return self.seconds_left() >= seconds_needed
