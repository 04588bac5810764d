"""The audition: a recipe's candidates tried on the user's own competition, and the best `keep` of
them trained on as the members voted (a recipe's [audition] table; boss turns it on in its quick
budget; `kit recipe run --no-audition` trains the fixed zoo instead).

One cut of successive halving. Every candidate (the recipe's members in the budget, and those
marked `candidate = true`, which train only here) starts with the training minutes a member would
get, its learning-rate schedule fitted to them, and stops with a checkpoint after `rung` of them,
where it is evaluated on validation (centre crops, the figure every timed run reports); in a
step-based budget (full, on a GPU: `kit recipe run boss --audition`) it stops at `rung` of its
train.max_steps instead (train.stop_step), its schedule still that of the whole run (a candidate
timed by its own train.minutes: at `rung` of those). The `keep` (when they share the recipe's
minutes, `per_slot`: at most one per slot, since a member beside another on one core gets half the
time) with the best validation accuracy at the cut resume from their checkpoints to the end of their
schedule (the same run, not a restart); the others are pruned: their run dirs stay, they are not
voted. The minutes are shared so the whole recipe still fits its time (kit.timeplan.audition_minutes).

Why one synchronous cut and not Optuna's SuccessiveHalvingPruner: that pruner is asynchronous
(ASHA): a candidate is judged against the candidates that reached the rung before it, so with eight
candidates trained two at a time the first two to finish would always survive. The cut ranks all
the scores together. Optuna keeps the record: each candidate is a trial (its rung score reported
at its step, pruned or kept) in RUNS/<recipe>/audition.optuna.journal, readable with Optuna's own
tools (`optuna.load_study`, its plots, optuna-dashboard); the decision is RUNS/<recipe>/audition.json
(both kept and read by kit.audition_record).

A twin (a member with `twin_of = "CANDIDATE"`: that candidate's settings with its own over them,
another train.seed) never trains in the rung; when its candidate survives at least `within` x the best's
score, the twin takes the last other survivor's place and trains from scratch for a survivor's share of
the time (twinned).

Honesty of the scores: the cut uses the validation split that the vote later calibrates on, so the
vote's out-of-fold figure is slightly optimistic after a selection (8 candidates, 4 kept); the test
scores of the accuracy bench are not affected.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from kit.audition_record import (
    AUDITION_FILE,
    JOURNAL_FILE,
    SPEC_KEYS,
    AuditionResult,
    decided,
    difference_error,
    record,
)
from kit.config import ENCODER_KINDS
from kit.errors import KitError
from kit.fsio import write_json
from kit.rundir import RunDir
from kit.timeplan import LEAST_RUNG_SECONDS, TimePlan, audition_minutes
from kit.train.results import load_config, read_metrics
from kit.workers import slots_for

if TYPE_CHECKING:
    from kit.recipe import Recipe
    from kit.zoo import RecipeRun


def wants_audition(recipe: Recipe, budget: str, override: bool | None, only, blocker: str | None,
                   timed: tuple, log, workers: int | None = None) -> str:
    """"cut" when this run auditions: the recipe's [audition] is on for `budget` (or --audition), the
    members are not named by --only, nothing trains them elsewhere or stops them early (`blocker`),
    the recipe is timed (`timed`: (--minutes, --member-minutes), else the budget's minutes), it has
    more candidates than it keeps, and, when it is timed, its minutes leave each candidate a rung
    (before predictions, which are estimated later: kit.timeplan.audition_minutes may still refuse
    then), trained as `workers` says (kit.workers.slots_for). An untimed (step-based) budget cuts at
    `rung` of each candidate's train.max_steps instead. "all" when it would, but keeps every
    candidate: no cut, the candidates train as the recipe's members. "" when it does not."""
    spec = recipe.audition_for(budget)
    if override is False or not (override or (spec["enabled"] and budget in spec["budgets"])):
        return ""
    n, (minutes, per_member) = len(recipe.members_for(budget, audition=True)), timed
    total = minutes or recipe.minutes.get(budget)
    why = "--only names the members" if only else blocker
    if not why and n <= spec["keep"]:
        twins = f" (twin(s) {', '.join(spec['twins'])} not trained: a twin goes on only after a cut)" \
            if spec["twins"] else ""
        log(f"audition: {n} candidate(s) and at most {spec['keep']} kept: no cut, every candidate trains to the "
            f"end{twins}")
        return "all"
    why = why or (None if per_member or not total else _too_short(total, n, spec, len(slots_for(workers, n))))
    if why:
        log(f"audition off: {why}" + ("" if only else "; training the recipe's fixed members"))   # --only: its own
        return ""
    return "cut"


def _too_short(minutes: float, n: int, spec: dict, slots: int) -> str | None:
    """Why `minutes` of recipe time cannot audition n candidates (None: they can)."""
    try:
        audition_minutes(minutes, 0.0, [0.0] * n, spec["keep"], float(spec["rung"]), slots)
    except KitError:
        return f"{minutes:g} minutes are too few for {n} candidates {slots} at a time"
    return None


def run_audition(run: RecipeRun, jobs: list, slots: list) -> AuditionResult:
    """Train every candidate to the cut, choose the survivors, train them to the end (and predict
    them, in the workers, as the recipe's members are). Sets run.chosen to the survivors. A re-run
    reads the decision from audition.json and continues the survivors."""
    result = earlier = decided(run.root, run.chosen, run.recipe.audition_for(run.budget))
    if result is None:
        result = _cut(run, jobs, slots)
    elif not (run.root / JOURNAL_FILE).is_file():     # the record is rebuilt from the decision (probe 42 D3)
        record(run.root, run.recipe.name, result)
        run.log(f"audition: {run.root / JOURNAL_FILE} was missing: written again from {AUDITION_FILE}")
    run.chosen = list(result.survivors)
    left = []
    # the dearest prediction first, so that it is not the last thing the recipe waits for
    for name in sorted(result.survivors, key=lambda n: -run.plan.prediction(n)):
        state = RunDir(run.root / name)
        if problem := state.summary_problem():       # said, as RecipeRun.jobs does (a pruned one's is left)
            run.log(f"{name}: its summary.json cannot be read ({problem}): not counted as finished; it resumes "
                    + ("from its checkpoint (its minutes so far from metrics.csv)" if state.has_checkpoint
                       else "from its first step"))
        if not state.finished:              # its minutes: _survivor_share's, as it resumes
            left.append((name, run.config(name), state.path, state.has_checkpoint))
    if left and earlier is not None:
        _said_timing(run, earlier, [j[0] for j in left])
    if left:
        run.log("audition: " + "; ".join(f"{j[0]} {'on from its checkpoint' if j[3] else 'from its first step'} "
                                         "to the end of its schedule" for j in left))
        run.train_jobs(left, slots, share=_survivor_share(run, result))
    return result


def _said_timing(run: RecipeRun, result: AuditionResult, names: list[str]) -> None:
    """One line when survivors left to train after an earlier run's cut resume with other timing than
    the cut was taken with (probe 43: a re-run without --member-minutes 0.25 gave a half-trained twin a
    100,000-step schedule without a word): --member-minutes M against M, timed against step-based."""
    plan, was = run.plan, result.minutes
    now = plan.per_member_minutes or (-1.0 if plan.timed else 0.0)     # -1: the recipe's minutes, shared
    if (was > 0) != (now != 0) or (now > 0 and was > 0 and abs(now - was) > 1e-6):
        then = f"{was:.2f} training minutes per candidate" if was else "steps (train.max_steps)"
        run.log(f"audition: the cut was taken with candidates timed by {then}; {', '.join(names)} now resume "
                f"{'timed otherwise' if now else 'by steps'}, so their schedules change: re-run with the first run's "
                "--minutes / --member-minutes to keep them")


def _survivor_share(run: RecipeRun, result: AuditionResult):
    """A survivor's training minutes as it resumes: what it trained before the cut plus its share of
    the time left (the time plan's, with the survivors' own predictions reserved, so an estimate
    made for the average candidate before the cut is corrected); with --member-minutes, those."""
    return run.plan.resumed_sharer(lambda name: trained_minutes(run.root / name), result.minutes)


def trained_minutes(run_dir: Path) -> float:
    """The training minutes a run has behind it: its summary's; else (summary.json damaged or gone,
    probe 45) its last evaluation's in metrics.csv, the clock its last.pt was written with; else 0."""
    summary = RunDir(run_dir).summary()
    if summary is None:
        try:
            rows = read_metrics(run_dir / "metrics.csv")
        except (OSError, KitError):                 # damaged too (read_metrics names it): nothing to go on
            rows = []
        summary = rows[-1] if rows else {}
    seconds = summary.get("seconds")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return 0.0
    return max(float(seconds), 0.0) / 60


def _cut(run: RecipeRun, jobs: list, slots: list) -> AuditionResult:
    spec, plan = run.recipe.audition_for(run.budget), run.plan
    keep, rung = spec["keep"], float(spec["rung"])
    minutes = 0.0                                   # untimed: the cut is at rung x each one's max_steps
    if plan.timed:
        minutes = _rung_minutes(run, keep, rung, max(len(slots), 1))
    keep = most_kept(spec, plan, len(slots))
    past = [n for n in run.chosen if _past_the_cut(run.root / n)]
    if past:                # the decision is gone (deleted): its scores cannot be taken again (probe 42)
        raise KitError(f"{run.root}: no {AUDITION_FILE}, but {', '.join(past)} trained past the audition's cut, so "
                       "the cut cannot be taken again from their scores now; put the file back, or re-run with "
                       "--fresh to audition again")
    rung_jobs = []
    for name, cfg, run_dir, resume in jobs:
        if RunDir(run_dir).summary() is None:       # not yet at the cut (a re-run after a kill resumes it)
            if problem := RunDir(run_dir).summary_problem():
                run.log(f"{name}: its summary.json cannot be read ({problem}): it resumes the rung from its "
                        + ("checkpoint" if resume else "first step"))
            if minutes:
                cfg.train.minutes, cfg.train.max_minutes = minutes, rung * minutes
            elif cfg.train.minutes:                 # timed by its own train.minutes, not the recipe's
                cfg.train.max_minutes = rung * cfg.train.minutes
            else:
                cfg.train.stop_step = cut_step(cfg.train.max_steps, rung)
            rung_jobs.append((name, cfg, run_dir, resume))
    run.log(f"audition: {len(run.chosen)} candidates, each "
            + (f"{rung * minutes:.2f} of its {minutes:.2f} training minutes" if minutes
               else f"{rung:.0%} of its train.max_steps (its schedule kept)")
            + f" before the cut; at most the best {keep} go on")
    after, run.after = run.after, False              # no prediction before the cut
    try:
        run.train_jobs(rung_jobs, slots, share=(lambda names: minutes) if minutes else None)   # None: their own
    finally:
        run.after = after
    scores, steps, sizes, cores = {}, {}, {}, {}
    for name in run.chosen:
        scores[name], steps[name], sizes[name] = _score(run.root / name)
        if (had := _cores(run.root / name)) is not None:
            cores[name] = had
    ranked = tie_ranked(run.chosen, scores, min(sizes.values(), default=0), float(spec["tie"]))
    if not ranked:
        raise KitError(f"{run.root}: no candidate of the audition was evaluated (every one diverged?); "
                       "see each member's train.log")
    kinds = {n: ENCODER_KINDS.get(run.config(n).model.encoder, "") for n in run.chosen}
    survivors = twinned(survivors_of(ranked, scores, keep, float(spec["within"]), max(len(slots), 1),
                                     kinds if spec["kinds"] else None), spec["twins"], scores, float(spec["within"]))
    result = AuditionResult(list(run.chosen), keep, rung, minutes, scores, steps, survivors, kinds,
                            {k: spec[k] for k in SPEC_KEYS}, min(sizes.values(), default=0), cores)
    write_json(run.root / AUDITION_FILE, asdict(result))
    record(run.root, run.recipe.name, result)
    for line in result.lines():
        run.log(line)
    return result


def _rung_minutes(run: RecipeRun, keep: int, rung: float, slots: int) -> float:
    """Each candidate's training minutes for the rung: those of a rung already begun (a re-run after a
    kill, with other --minutes, --member-minutes or --workers), so the cut compares candidates trained
    alike (probe 42: 1-minute and 0.3-minute candidates were ranked together), else the time plan's.
    A begun rung is finished at its own minutes even when this run's would be too few for a rung
    (probe 44: the re-run of a killed rung with --minutes 4 was refused, its two finished rungs left)."""
    plan, begun = run.plan, _begun_rung(run)
    predictions = [plan.prediction(n) for n in run.chosen]
    if begun is None:
        try:
            return plan.candidate_minutes(predictions, keep, rung, slots)
        except KitError:        # the first check passed; the start-up took the rest (probe 44 F2, a slow start)
            least = LEAST_RUNG_SECONDS / rung / 60
            run.log(f"audition: {time.time() - plan.began:.0f} s spent before it leave too few of the recipe's "
                    f"{plan.minutes:g} minutes for every candidate's rung: each trains the shortest one "
                    f"({least:.2f} training minutes), and the recipe runs past its minutes (more --minutes, "
                    "or --no-audition, keeps to them)")
            return least
    name, earlier = begun
    try:
        minutes: float | None = plan.candidate_minutes(predictions, keep, rung, slots)
    except KitError:                    # too few for a rung now: the begun one is finished all the same
        minutes = None
    if minutes is None or abs(earlier - minutes) > 1e-6:
        now = "" if minutes is None else f", not this run's {minutes:.2f}"
        run.log(f"audition: the rung was begun at {earlier:.2f} training minutes per candidate ({name}); the "
                f"others train as many{now}, so that the cut compares like with like")
    return earlier


def _begun_rung(run: RecipeRun) -> tuple[str, float] | None:
    """The first candidate with a config.toml of its own and the training minutes it gives (a rung
    begun by an earlier run), or None."""
    for name in run.chosen:
        if (run.root / name / "config.toml").is_file():
            try:
                earlier = load_config(run.root / name).train.minutes
            except KitError:
                continue
            return (name, earlier) if earlier else None
    return None


def most_kept(spec: dict, plan: TimePlan, slots: int) -> int:
    """The most survivors: [audition] keep, and with `per_slot`, when the survivors share the recipe's
    minutes (not --member-minutes, not a step budget), at most one per slot: a member trained beside
    another on one core gets half the time (tts, 2026-12-04, 2 cores: four survivors of 2.2-3.0
    minutes voted 0.865 private, two of 3.7-3.9 minutes 0.8925). audition_minutes still sizes the rung
    for `keep`, so the cut costs what it did and the survivors share more."""
    if spec["per_slot"] and plan.minutes and not plan.per_member_minutes:
        return min(spec["keep"], max(slots, 1))
    return spec["keep"]


def cut_step(max_steps: int, rung: float) -> int:
    """The step at which a step-based candidate stops for the cut: `rung` of its schedule, at least 1."""
    return max(1, round(rung * max_steps))


def survivors_of(ranked: list[str], scores: dict, keep: int, within: float, slots: int,
                 kinds: dict[str, str] | None = None) -> list[str]:
    """The survivors of the cut, best first. How many: the best `keep` of the candidates `ranked`
    (best first), less those scoring under `within` x the best's score (a candidate far behind at the
    cut gets little weight in the vote and takes the minutes the leaders would have had), never
    fewer than one per slot, so no core idles. Which: with `kinds` (candidate -> kind of network,
    kit.config.ENCODER_KINDS), the best of each kind first, then the rest by rank: near chance the
    order at the cut says little about the order at the end (the second place went on to be the
    best member on many, 2026-12-04), while two networks of one kind make the same mistakes and the
    vote gains little from the second (hard, 2026-12-04: the big Transformer went on beside
    transformer-s, ended at 0.151 and the vote was transformer-s alone)."""
    best = max(scores[n] or 0.0 for n in ranked)
    close = [n for n in ranked[:keep] if (scores[n] or 0.0) >= within * best]
    count = max(len(close), min(slots, keep))
    if not kinds:
        return ranked[:count]
    leaders: dict[str, str] = {}
    for name in ranked:
        leaders.setdefault(kinds.get(name, name), name)
    chosen = list(leaders.values())[:count]
    chosen += [n for n in ranked if n not in chosen][:count - len(chosen)]
    return sorted(chosen, key=ranked.index)


def twinned(survivors: list[str], twins: dict[str, str], scores: dict | None = None,
            within: float = 1.0) -> list[str]:
    """The survivors (best first) with the twins ({twin: candidate}, a recipe's `twin_of`) of a candidate
    close enough to go on by itself: its score at the cut at least `within` x the best's (`scores`; the
    first survivor, the best at the cut or tied with it, always is). The twin goes on beside its candidate
    (after it, which then leads) in the place of the last survivor that is neither a candidate with a twin
    nor a twin; never more survivors, and none when its candidate is the only one.
    Why twins (boss's quick budget, 2026-12-06, two replicates): resnet-s with a second seed of itself voted
    as well as or better than resnet-s with transformer-s on test on all four competitions measured
    (bench-results/cpu-twin-resnet-2026-12-06/). Why not only beside the leader (2026-12-07): in every audition run
    recorded in bench-results/ (hard, tts, many and tts-close, 8 and 30 minutes) resnet-s ended the best
    member, also in each of the six where transformer-s led the cut (by up to 0.118: at 10% of its minutes it
    has taken 2.4-4x resnet-s's steps); tts-close, 2026-12-07: transformer-s 0.386 led resnet-s 0.330, they
    went on together and the vote (0.679 private) fell below resnet-s alone (0.695). Why `within` (probe 44):
    resnet-s kept as one per core at 0.25 took the place of transformer-s, the leader at 0.625, with its
    twin, and the vote was two seeds of the weaker network (0.50 on test)."""
    out, scores = list(survivors), scores or {}
    best = max((scores.get(n) or 0.0 for n in out), default=0.0)
    for twin, of in twins.items():
        others = [n for n in out if n != of and n not in twins and n not in twins.values()]
        close = of in out and (out[0] == of or (scores.get(of) is not None and scores[of] >= within * best))
        if close and others:
            out.remove(others[-1])
            out.insert(out.index(of) + 1, twin)
    return out


def _past_the_cut(run_dir: Path) -> bool:
    """Whether a candidate trained on after its rung: it finished its schedule (no rung does), or
    metrics.csv has evaluations after the step its summary names (resumed past the cut, then killed)."""
    summary = RunDir(run_dir).summary()
    if summary is None:                     # mid-rung (or no summary at all): decided() says the rest
        return False
    rows, step = read_metrics(run_dir / "metrics.csv"), _integer(summary.get("step"))
    return summary.get("stopped_reason") == "budget" or bool(rows and int(rows[-1]["step"]) > step)


def tie_ranked(order: list[str], scores: dict, n: int, tie: float) -> list[str]:
    """The candidates evaluated (score not None), best first, where a score at most `tie` standard
    errors below the best left is a tie, and of tied candidates the one earlier in `order` (the
    recipe's, its prior) ranks first. The standard error is that of the difference of two accuracies
    on `n` validation utterances (unpaired binomial: a little wide for two models scored on the same
    ones). Why: at the cut, 10% of its minutes, the order within the noise says little about the order
    at the end (tts-close, 2026-12-06, 800 utterances: ecapa-s 0.329 went on over resnet-s 0.319,
    a standard error of 0.023 apart, and the vote fell from 0.735 to 0.631 private), while the
    order at the end was the same on every competition of the suite. tie = 0: by score alone."""
    left = [c for c in order if scores.get(c) is not None]
    ranked = []
    while left:
        top = max(scores[c] for c in left)
        ranked.append(next(c for c in left if top - scores[c] <= tie * difference_error(top, scores[c], n)))
        left.remove(ranked[-1])
    return ranked


def _integer(value) -> int:
    """A JSON integer read from a summary, else 0 (absent, a bool, a float or text: damaged by hand)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _cores(run_dir: Path) -> float | None:
    """The CPU cores a candidate had in the rung: its summary's session_cpu_cores (CPU time / wall time of the
    whole session, its set-up included, as the rung's minutes are counted), else an older kit's
    steps_per_second.cpu_cores (its loop's); None on a GPU or when its summary does not say."""
    summary = RunDir(run_dir).summary() or {}
    rates = summary.get("steps_per_second")
    value = summary.get("session_cpu_cores", rates.get("cpu_cores") if isinstance(rates, dict) else None)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


def _score(run_dir: Path) -> tuple[float | None, int, int]:
    """A candidate's validation accuracy at the cut (its last evaluation), its step there, and the
    number of validation utterances (0 when its summary does not say)."""
    state = RunDir(run_dir)
    summary = state.summary() or {}
    size = _integer(summary.get("n_val"))
    if state.diverged:
        return None, summary.get("step", 0), size
    rows = read_metrics(run_dir / "metrics.csv")
    if not rows:
        return None, 0, size
    return float(rows[-1]["val_acc"]), int(rows[-1]["step"]), size
