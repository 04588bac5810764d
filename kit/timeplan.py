"""The recipe's clock, in one place: how a recipe's wall time (`--minutes`, `--member-minutes`, a
budget's `minutes`) is shared among its members and the stages after the vote, what each member's
prediction is expected to cost, the `--max-hours` deadline, and a launcher's job time limits.

kit.zoo, kit.rounds, kit.workers and the launchers ask a TimePlan (or, for a launcher's job,
`time_limits`); none of them computes time on its own.

How the time is shared. The members train `slots` at a time and end at (1 - stages) of the recipe's
minutes; the stages after the vote share the rest. Each member is given its minutes when it starts
(re-shared, so a member that starts late gets what earlier ones left, and a stage that was skipped
leaves its time to the next). A member's share reserves its start-up and its own prediction; the
prediction is estimated per member from its FLOPs (its model on the competition's validation and
test lengths, kit.cost.predict_gflop), so a Transformer, whose whole-utterance prediction costs
several times an ECAPA's, no longer takes the time of the member that follows it.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kit.data import split_for
from kit.errors import KitError

LEAST_MEMBER_SECONDS = 10.0        # the least training a member is planned (--minutes, --member-minutes)
# What a member costs besides training, measured on the 2-core CPU (hard preset, quick budget):
START_SECONDS = 8                  # a worker process: python, torch and kit imports, data mapped
AFTER_SECONDS = 20                 # the ensemble (cross-fitted), the report and its plot, a local submission
# An audition candidate's stop at the cut beyond its rung's minutes: the step that crosses the time
# limit, its evaluation and checkpoint (the quick boss Transformer on hard: 52.5 s at its cut
# evaluation's end for 38.4 s of rung, 2026-12-04).
CUT_SECONDS = 14
# A member's prediction on one core of the 2-core CPU, in GFLOP/s of its counted FLOPs (validation
# whole and windowed, test once). Measured from the boss members' prediction times on the tts and
# many suite competitions (2026-12-04, kit.cost.predict_gflop over the seconds between summary.json and
# test_probs.npy): 9.6-18.0 GFLOP/s (ECAPA lowest, the ResNets highest, the Transformer 12), on a
# machine that other processes shared a little. Frames alone (the estimate before) were off by up to
# 2.4x per member (the Transformer 146 s predicted against 62 s reserved); FLOPs by at most ~1.4x.
PREDICT_GFLOPS = 13.0
# --max-hours: room kept, as a share of the training time a member is given, for what follows its
# stop (the last evaluation and checkpoint) and for error in the estimates (a GPU's prediction is
# taken as negligible); a guess on the safe side.
STOP_SHARE = 0.15
LEAST_RUNG_SECONDS = 10.0  # an audition candidate's shortest rung (kit.audition)
MIN_MEMBER_SECONDS = 60    # a member that would get less training time than this is not started
# A launcher's job (a Kaggle kernel, a Slurm job):
START_HOURS = 0.25         # a job's own time beyond training: start, installs, packing the data, predicting
STOP_MARGIN_HOURS = 0.25   # kit in a job stops this long before the job's limit, so its checkpoints are kept


def member_minutes(total_minutes: float, spent_seconds: float, predicts: list[float], n_slots: int,
                   floor: bool = False) -> float:
    """Training minutes for the member starting now, so that the whole recipe fits `total_minutes` of
    wall time: what is left after `spent_seconds`, less the end (ensemble, report, submission), for
    the members still to train (`predicts`: each one's prediction seconds, the starting one first)
    `n_slots` at a time. A slot trains ceil(members / slots) of them one after another; the starting
    member's own prediction is reserved, the others' at their average. floor: never refuse, give at
    least 10 seconds (a member starting late in a running recipe)."""
    left = total_minutes * 60 - spent_seconds - AFTER_SECONDS
    rounds = math.ceil(len(predicts) / n_slots)         # members one after another in a slot
    others = predicts[1:]
    later = (rounds - 1) * (sum(others) / len(others) if others else 0.0)
    per_member = (left - rounds * START_SECONDS - predicts[0] - later) / rounds
    if floor:
        per_member = max(per_member, LEAST_MEMBER_SECONDS)
    elif per_member < LEAST_MEMBER_SECONDS:
        raise KitError(f"--minutes {total_minutes:g}: too little time for {len(predicts)} member(s) "
                       f"{n_slots} at a time; give more minutes or fewer members (--only)")
    return per_member / 60


def audition_minutes(total_minutes: float, spent_seconds: float, predicts: list[float], keep: int, rung: float,
                     n_slots: int) -> float:
    """Each candidate's training minutes in an audition (kit.audition), so that the whole recipe fits
    `total_minutes`: every candidate (`predicts`: their prediction seconds) trains `rung` of them,
    and stops at the cut (CUT_SECONDS), then the `keep` survivors train the rest and are predicted
    (at the candidates' average), `n_slots` at a time, the end (ensemble, report, submission) after them."""
    left = total_minutes * 60 - spent_seconds - AFTER_SECONDS
    n = len(predicts)
    predict = keep * sum(predicts) / max(n, 1)
    work = left * n_slots - (n + keep) * START_SECONDS - n * CUT_SECONDS - predict
    seconds = work / (n * rung + keep * (1 - rung))
    if seconds * rung < LEAST_RUNG_SECONDS:
        raise KitError(f"--minutes {total_minutes:g}: too little time to audition {n} candidates {n_slots} at a "
                       "time; give more minutes, or --no-audition")
    return seconds / 60


def predict_estimates(store, configs: dict, on_gpu: bool) -> dict[str, float]:
    """Seconds to predict each member (name -> seconds) on one CPU core: its counted FLOPs over the
    validation split (twice when infer.mode is auto) and the test set, at PREDICT_GFLOPS. A GPU's
    prediction is taken as negligible (0)."""
    if on_gpu or not configs:
        return dict.fromkeys(configs, 0.0)
    # deferred: kit.cost imports kit.recipe, which imports this module (through kit.rounds): a cycle
    from kit.cost import predict_gflop

    first = next(iter(configs.values()))
    val = store.lengths[split_for(store, first.data.val_fraction, first.data.split_seed).val]
    test = store.lengths[store.test_index]
    return {name: predict_gflop(cfg, val, test) / PREDICT_GFLOPS for name, cfg in configs.items()}


class Deadline:
    """`--max-hours`: the wall-clock time by which the command must be done (a notebook session's
    end). Each member starting is given train.max_minutes so that it checkpoints and stops before
    it, with time left for the predictions and the recipe's end; one that would get less than
    MIN_MEMBER_SECONDS is not started. The run dirs then resume on the next session's re-run."""

    def __init__(self, hours: float, began: float, own: dict[str, float] | None = None,
                 predict: dict[str, float] | None = None):
        self.at = began + hours * 3600
        self.own = own or {}               # member -> its own train.max_minutes (0: none)
        self.predict = predict or {}       # member -> seconds to predict it (predict_estimates)
        self.not_started: list[str] = []

    def seconds_left(self) -> float:
        return self.at - time.time()

    def member_minutes(self, name: str, log, predicting: list[str] | None = None) -> float | None:
        """train.max_minutes for member `name` starting now, leaving time to predict the members
        `predicting` (default: this one); None (and a line) when too little is left."""
        reserve = AFTER_SECONDS + START_SECONDS + sum(self.predict.get(n, 0.0) for n in predicting or [name])
        train_seconds = (self.seconds_left() - reserve) * (1 - STOP_SHARE)
        if train_seconds < MIN_MEMBER_SECONDS:
            log(f"{name}: not started, {max(self.seconds_left(), 0) / 60:.1f} min are left before the "
                "--max-hours deadline; re-run the same command (next session) to continue")
            return None
        own = self.own.get(name, 0.0)
        minutes = min(own, train_seconds / 60) if own > 0 else train_seconds / 60
        log(f"{name}: --max-hours: trains at most {minutes:.1f} min, then checkpoints and stops")
        return minutes

    def after_needs(self, to_predict: list[str]) -> float:
        """Seconds the recipe's end needs: predicting the members `to_predict`, then the vote, report
        and submission."""
        return AFTER_SECONDS + sum(self.predict.get(n, 0.0) for n in to_predict)

    def time_for_after(self, seconds_needed: float) -> bool:
        return self.seconds_left() >= seconds_needed


@dataclass
class TimePlan:
    """One recipe run's clock. minutes: the recipe's wall time (None: not timed by the recipe);
    per_member_minutes: each member's training minutes instead; slots: members training at once;
    stage_slots: jobs of a stage after the vote training at once (kit.zoo trains them on the
    slots the whole recipe would have); stages: the share of the time those stages take; predict:
    member -> prediction seconds; deadline: --max-hours, or None."""
    minutes: float | None = None
    per_member_minutes: float | None = None
    slots: int = 1
    stages: float = 0.0
    predict: dict[str, float] = field(default_factory=dict)
    deadline: Deadline | None = None
    stage_slots: int = 1
    began: float = field(default_factory=time.time)
    members_end: float = 1.0           # the share of the time at which the stages begin

    @property
    def timed(self) -> bool:
        """Whether the members' and stages' minutes come from a time budget."""
        return bool(self.minutes or self.per_member_minutes)

    def prediction(self, name: str) -> float:
        """A job's prediction seconds: its own estimate, a fine-tune's (`NAME-plR`) its member's, else
        the members' average."""
        if name in self.predict:
            return self.predict[name]
        base = name.rsplit("-pl", 1)[0]
        if base in self.predict:
            return self.predict[base]
        return sum(self.predict.values()) / len(self.predict) if self.predict else 0.0

    def member_share(self, starting: list[str], floor: bool = True) -> float:
        """Training minutes for the first of `starting` (the member starting now, then those still
        waiting), re-shared from what is left of the members' part of the time."""
        return self.stage_minutes(1.0 - self.stages, starting, floor=floor, slots=self.slots)

    def stage_minutes(self, end: float, jobs: list[str], share: float | None = None, floor: bool = True,
                      slots: int | None = None) -> float:
        """Training minutes for the first of `jobs` (then those waiting) in a stage that must end at
        `end` x the recipe's minutes, `slots` at a time (default: stage_slots); with --member-minutes
        M, a stage taking `share` of the time gets M x share / (1 - stages)."""
        if self.per_member_minutes:
            return self.per_member_minutes * (1.0 if share is None else share / max(1.0 - self.stages, 0.1))
        if not self.minutes:
            raise KitError("internal: stage minutes asked of a recipe that is not timed")
        return member_minutes(self.minutes * end, time.time() - self.began,
                              [self.prediction(n) for n in jobs], max(slots or self.stage_slots, 1), floor)

    def stage_span(self, share: float) -> tuple[float, float]:
        """(start, end) as shares of the recipe's time for the first stage after the vote, which takes
        `share` of it: it starts where the members end and takes its part of what follows."""
        start = self.members_end
        return start, start + (1.0 - start) * share / max(self.stages, 1e-9)

    def candidate_minutes(self, predicts: list[float], keep: int, rung: float, slots: int) -> float:
        """An audition candidate's training minutes (kit.audition): --member-minutes, else the
        members' part of the recipe's time shared by audition_minutes (the stages after the vote
        keep theirs)."""
        return self.per_member_minutes or audition_minutes(
            (self.minutes or 0.0) * self.members_end, time.time() - self.began, predicts, keep, rung, slots)

    def resumed_sharer(self, trained_minutes: Callable[[str], float],
                       fixed: float) -> Callable[[list[str]], float] | None:
        """For runs that resume after training before (an audition's survivors): the minutes a run
        trained (`trained_minutes(name)`) plus its share of the members' time left, its own prediction
        reserved; with --member-minutes, `fixed`; None when the recipe is not timed (each run keeps
        its own train.minutes, or its steps)."""
        share = self.sharer()
        if share is None:
            return None
        if self.per_member_minutes:
            return lambda names: fixed
        return lambda names: trained_minutes(names[0]) + share(names)

    def sharer(self, end: float | None = None, share: float | None = None) -> Callable[[list[str]], float] | None:
        """What kit.workers and the sequential path call as each job starts (its name first, then the
        jobs waiting) for its --minutes; None when the recipe is not timed. end: the stage's end (the
        members' by default)."""
        if not self.timed:
            return None
        if end is None:
            return self.member_share
        return lambda jobs: self.stage_minutes(end, jobs, share=share)


def time_limits(recipe, budget: str, members_per_job: int, longest: float, minutes: float | None,
                per_member_minutes: float | None, max_hours: float | None) -> tuple[float, float | None]:
    """A launcher's job: (its time limit in hours, the --max-hours kit gets inside it, or None).
    A timed recipe (its wall time, or minutes per member) needs that time and START_HOURS; else a
    job gets `max_hours` or `longest` (Kaggle: its 12-hour session) and kit stops a little before
    its end, so that the checkpoints it leaves are complete."""
    timed = per_member_minutes * members_per_job if per_member_minutes else (minutes or recipe.minutes.get(budget))
    if timed and not max_hours:
        return min(longest, timed / 60 + START_HOURS), None
    hours = max_hours or longest
    return hours, hours - min(STOP_MARGIN_HOURS, hours / 10)
