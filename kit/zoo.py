"""Running a recipe: train its members (here, in worker processes, or through a launcher), then
predict, vote, the stages after the vote (kit.rounds) and submit, as its [after] table says.
Re-running continues: finished members are kept, half-finished ones resume."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from kit.audition import decided, run_audition, wants_audition
from kit.config import RunConfig
from kit.data import FeatureStore
from kit.ensemble import ensemble_runs
from kit.errors import KitError
from kit.infer import predict_run, source_mode
from kit.kaggle import check_recipe_submissions, recipe_submit
from kit.members import check_configs, check_members, default_budget, start_over
from kit.recipe import BUDGETS, Recipe, ensure_data, load_recipe, member_config
from kit.recipe_result import MemberResult, RecipeResult, VoteResult, member_result, submission_message
from kit.records import PredictionIds
from kit.report import format_report, report_runs
from kit.rounds import (
    STAGE_DEFAULTS,
    distill_stage,
    enabled,
    lmft_stage,
    pseudo_rounds,
    refit_stage,
    stage_span,
    stages_share,
)
from kit.rundir import RunDir
from kit.runs import member_claims, recipe_lock
from kit.timeplan import Deadline, TimePlan, predict_estimates
from kit.train import TrainingDiverged, load_config, train
from kit.workers import member_task, run_parallel, slots_for

if TYPE_CHECKING:
    from kit.launch import Launcher


def run_recipe(path: str | Path, data: str | None = None, budget: str | None = None, runs: str = "runs",
               only: list[str] | None = None, after: bool = True, progress: bool = True, log=None,
               workers: int | None = None, minutes: float | None = None,
               per_member_minutes: float | None = None, submit: bool | None = None,
               submissions: str | Path = "submissions", fresh: bool = False,
               max_hours: float | None = None, pseudo: bool | None = None, distill: bool | None = None,
               launcher: Launcher | None = None, ensemble: str | None = None,
               audition: bool | None = None, refit: bool | None = None, lmft: bool | None = None,
               competition: str | None = None) -> RecipeResult:
    """Train the recipe's members (skipping finished ones, resuming half-finished ones), then
    predict, ensemble and submit as its [after] table says. Returns everything the CLI prints.

    workers: members trained at once (default: one per GPU, or one per CPU core on a CPU).
    minutes: a wall-clock allowance for the whole recipe, shared among the members left to train;
    per_member_minutes: the same per member. Either replaces the members' own train.minutes.
    fresh: move the chosen members' old run dirs aside (RUNS/<recipe>.old-<time>/) and train them
    again. competition: where the vote is submitted (kit.kaggle.recipe_competition).
    lmft, pseudo, refit, distill: turn the recipe's [after] stage of that name on or off (None: as the
    recipe says; a stage the recipe does not set up gets kit.rounds' defaults).
    max_hours: a hard stop for this call, e.g. the time left in a notebook session (see Deadline):
    members are stopped with a checkpoint or not started, and the after stages wait until every
    member has finished; calling again (next session) continues from the run dirs.
    launcher: where the members train when not here (kit.launch: Kaggle kernels, Slurm jobs); their
    run dirs come back under RUNS/<recipe>/. ensemble: replaces the recipe's [after] ensemble.
    audition: try the recipe's candidates and keep the best (kit.audition; None: as the recipe says).
    """
    _check_times(minutes, per_member_minutes, max_hours)
    blocker = "--launcher trains the members elsewhere" if launcher else "--max-hours" if max_hours else None
    run = RecipeRun.open(path, data, budget, runs, only, progress, log, workers, submissions,
                         {"submit": submit, "ensemble": ensemble, "pseudo": pseudo, "distill": distill, "refit": refit,
                          "lmft": lmft, "audition": audition, "timed": (minutes, per_member_minutes),
                          "blocker": blocker, "fresh": fresh, "elsewhere": launcher is not None})
    # Only the Kaggle launcher has an endpoint (`--endpoint`): a rehearsal on `kit kaggle serve` must
    # submit there too, never to real Kaggle with the user's credentials.
    run.endpoint = getattr(launcher, "endpoint", None)
    run.competition = competition or getattr(launcher, "competition", None)
    check_recipe_submissions(run.submissions, run.recipe.name, run.recipe.after, after, run.data_dir, run.endpoint,
                             run.log)
    with recipe_lock(run.root, fresh) as share, member_claims(run.root) as claim:    # --fresh: alone to move
        _start(run, fresh, only, share, claim if launcher is None else lambda names: None)  # its jobs claim
        jobs, skipped = run.jobs()
        if launcher is not None and jobs:      # trained elsewhere; max_hours bounds each remote job, not this call
            _train_elsewhere(run, launcher, [j[0] for j in jobs], minutes, per_member_minutes, max_hours, fresh)
            jobs, max_hours = [], None
        slots = slots_for(workers, len(jobs))
        run.plan_time(jobs, slots, minutes, per_member_minutes, max_hours, after)
        cut = run_audition(run, jobs, slots) if run.auditioning else None
        if cut is None:
            run.train_jobs(jobs, slots)
        deadline = run.plan.deadline
        result = run.results(skipped, deadline)
        result.audition = cut
        if deadline is not None and after:
            after = _in_time(deadline, result, [Path(m.run_dir) for m in result.members if not m.diverged],
                             run.recipe.after["which"])
        if after:
            _after(run, result)
        result.minutes = (time.time() - run.began) / 60
    return result


def _train_elsewhere(run: RecipeRun, launcher: Launcher, names: list[str], minutes, per_member_minutes, max_hours,
                     fresh: bool) -> None:
    """The members trained by a launcher, and what came back checked against what the recipe asks of
    each (probe 37: a kernel's output from before the recipe was edited, or two members' folders
    swapped, was voted and sent)."""
    launcher.train(run.recipe, names, run.root, run.budget, run.data_dir, run.log, minutes=minutes,
                   per_member_minutes=per_member_minutes, max_hours=max_hours, fresh=fresh)
    check_members(run.root, names, run.recipe, run.budget, run.data_dir, run.store, run.log)


def _start(run: RecipeRun, fresh: bool, only, share: Callable[[], None], claim) -> None:
    """Before the members train: --fresh moves them aside (holding the recipe's lock alone, then
    sharing it), then every member is checked (kit.members.check_members)."""
    names = [*run.chosen, *(run.recipe.audition_for(run.budget)["twins"] if run.auditioning else ())]
    if fresh:           # an audition's twins with its candidates: a twin of an earlier cut is never voted again
        start_over(run.root, names, run.log, decision=not only)
        share()
    claim(names)                        # none trained by another `kit recipe run` (kit.runs.member_claims)
    check_members(run.root, names, run.recipe, run.budget, run.data_dir, run.store, run.log, run.auditioning)
    if run.budget_said:                 # the full budget on real data is hours of GPU time: said, not assumed
        run.log(run.budget_said)


def _check_times(minutes, per_member_minutes, max_hours) -> None:
    """--minutes, --member-minutes and --max-hours, when given, are finite and positive."""
    for value, flag, unit in ((minutes, "--minutes", "minutes"), (per_member_minutes, "--member-minutes", "minutes"),
                              (max_hours, "--max-hours", "hours")):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise KitError(f"{flag} {value}: must be a positive number of {unit}")

@dataclass
class RecipeRun:
    """One call of run_recipe: the recipe, its data, where its members go, and how its time is
    shared (members first, then the stages after the vote)."""
    recipe: Recipe
    budget: str
    data_dir: Path
    store: FeatureStore
    root: Path                                  # RUNS/<recipe>
    chosen: list[str]
    log: Callable[[str], None]
    progress: bool
    workers: int | None
    submissions: Path
    began: float = field(default_factory=time.time)
    plan: TimePlan = field(default_factory=TimePlan)    # the recipe's clock (plan_time sets it)
    after: bool = True                          # predict (in the workers), ensemble, the stages, submit
    auditioning: bool = False                   # chosen are the audition's candidates (kit.audition)
    endpoint: str | None = None                 # the stand-in the kernels went to: the submission goes there too
    competition: str | None = None              # --competition (None: kit.kaggle.recipe_competition's choice)
    budget_said: str = ""                       # the line for a budget kit chose, said once the checks pass

    @classmethod
    def open(cls, path, data, budget, runs, only, progress, log, workers, submissions, overrides) -> RecipeRun:
        """Load the recipe (with the command line's [after] overrides), find the data, choose the
        budget and members, open the packed store."""
        began, log = time.time(), log or (lambda message: None)
        recipe = load_recipe(path)
        recipe.after.update({k: overrides[k] for k in ("submit", "ensemble") if overrides[k] is not None})
        for key, defaults in STAGE_DEFAULTS.items():
            if overrides[key] is not None:
                recipe.after[key] = {**(recipe.after[key] or defaults), "enabled": overrides[key]}
        data_dir = ensure_data(data, log)
        said = ""
        if budget is None:                  # kit's choice, said once the checks pass (_start)
            fresh = overrides["fresh"]      # --fresh moves the members aside: all of them, or --only's
            root = None if fresh and not only else Path(runs) / recipe.name
            budget, said = default_budget(data_dir, overrides["elsewhere"], root, skip=(only or ()) if fresh else ())
        if budget not in BUDGETS:
            raise KitError(f"budget {budget!r}: choose quick or full")
        mode = wants_audition(recipe, budget, overrides["audition"], only, overrides["blocker"],
                              overrides["timed"], log, workers)
        names = recipe.members_for(budget, audition=bool(mode))
        if only:        # a fixed member or a candidate: a launcher's kernels name the fixed ones (probe 19)
            either = set(names) | set(recipe.members_for(budget, audition=True))
            names = [m[0] for m in recipe.members if m[0] in either]
        if mode == "all" and not overrides["fresh"]:    # an earlier cut over them: refused, as a changed one is
            decided(Path(runs) / recipe.name, names, recipe.audition_for(budget))
        for name in only or []:
            if name not in names:
                raise KitError(f"{recipe.path}: --only {name}: no such member; members: {', '.join(names)}")
        chosen = [n for n in names if not only or n in only]
        if not chosen:
            why = ("every member is an audition candidate (`candidate = true`), and the audition is off: see "
                   "the line above" if recipe.members_for(budget, audition=True) else "their `budgets` lists")
            raise KitError(f"{recipe.path}: no member trains in the {budget} budget ({why})")
        recipe.only_trains(budget, only, chosen, log)
        check_configs(recipe, chosen, budget, here=not overrides["elsewhere"])
        dtype = member_config(recipe, chosen[0], budget).data.store_dtype
        store = FeatureStore.open(data_dir, dtype, progress=progress)
        return cls(recipe, budget, data_dir, store, Path(runs) / recipe.name, chosen, log, progress, workers,
                   Path(submissions), began, auditioning=mode == "cut", budget_said=said)

    def config(self, name: str) -> RunConfig:
        return member_config(self.recipe, name, self.budget, self.data_dir)

    def jobs(self) -> tuple[list, set]:
        """[(name, cfg, run_dir, resume)] for the members left to train, and the finished ones' names."""
        jobs, skipped = [], set()
        for name in self.chosen:
            run = RunDir(self.root / name)
            if run.finished:
                self.log(f"{name}: diverged earlier in {run.path}, not voted (--fresh trains it again)"
                         if run.diverged else f"{name}: already finished in {run.path}, skipped")
                skipped.add(name)
                continue
            problem = run.summary_problem()
            if problem and not self.auditioning:    # said (probe 40); an audition says it (kit.audition)
                self.log(f"{name}: its summary.json cannot be read ({problem}): not counted as finished; "
                         + ("it resumes from its checkpoint and writes a new one" if run.has_checkpoint else
                            f"it has no checkpoint to resume from (--fresh --only {name} trains it again)"))
            jobs.append((name, self.config(name), run.path, run.has_checkpoint))
        return jobs, skipped

    def plan_time(self, jobs, slots, minutes, per_member_minutes, max_hours, after: bool) -> TimePlan:
        """The run's TimePlan: the recipe's minutes (or minutes per member), the stages' share, each
        member's prediction estimate, the --max-hours Deadline; logs the members' first share and
        refuses an allowance too small to start them."""
        if not per_member_minutes:
            minutes = minutes or self.recipe.minutes.get(self.budget)
        self.after = after
        stages = stages_share(self.recipe.after) if after else 0.0
        predict: dict[str, float] = {}
        if (minutes and not per_member_minutes) or max_hours:   # per-member minutes use no estimate
            on_gpu = bool(slots) and "GPU" in slots[0]["label"]
            predict = predict_estimates(self.store, {n: self.config(n) for n in self.chosen}, on_gpu)
        # members trained now end at (1 - stages) of the time; with every member kept from an earlier
        # run, the stages share the whole allowance in proportion to their shares
        stage_slots = max(len(slots_for(self.workers, len(self.chosen))), 1)   # train_jobs' default for a stage
        plan = TimePlan(minutes, per_member_minutes, max(len(slots), 1) if slots else stage_slots, stages, predict,
                        stage_slots=stage_slots, began=self.began, members_end=1.0 - stages if jobs else 0.0)
        if max_hours:
            plan.deadline = Deadline(max_hours, self.began, {j[0]: j[1].train.max_minutes for j in jobs}, predict)
        self.plan = plan
        if jobs and plan.timed and not self.auditioning:      # an audition shares its own (kit.audition)
            names = [j[0] for j in jobs]
            each = plan.member_share(names, floor=False)          # refuses an allowance too small to start
            self.log(f"time budget: {each:.2f} training minutes each for {', '.join(names)}, {len(slots)} at a time"
                     + (" (re-shared as each member starts, its own prediction reserved)"
                        if not per_member_minutes else "")
                     + (f"; {stages:.0%} of the time kept for the stages after the vote" if stages else ""))
            for _, cfg, _, _ in jobs:
                cfg.train.minutes = each
        return plan

    def train_jobs(self, jobs: list, slots: list | None = None, share=None) -> None:
        """Train (and, in worker processes, predict) jobs [(name, cfg, run_dir, resume)]: in worker
        processes when there are several slots, else here, one after another. share: the time plan's
        sharer for a stage (default: the members')."""
        slots = slots_for(self.workers, len(self.chosen)) if slots is None else slots
        share = share or self.plan.sharer()
        deadline = self.plan.deadline
        if len(slots) > 1:
            on_cpu = "CPU" in slots[0]["label"]
            predict = self.after and self.recipe.after["predict"]
            tasks = [member_task(job, on_cpu, predict, self.which, self.budget) for job in jobs]
            run_parallel(tasks, slots, self.log, share, deadline)
            return
        names = [j[0] for j in jobs]
        for k, (name, cfg, run_dir, resume) in enumerate(jobs):
            if deadline is not None:        # predicted at the end: the ones trained so far and this one
                limit = deadline.member_minutes(name, self.log, predicting=names[:k + 1])
                if limit is None:
                    deadline.not_started += names[k:]
                    break
                cfg.train.max_minutes = limit
            if share is not None:
                cfg.train.minutes = share(names[k:])
            self.log(f"training {name} -> {run_dir}{' (resuming)' if resume else ''}")
            try:
                train(cfg, run_dir, resume=resume, progress=self.progress, store=self.store, budget=self.budget)
            except TrainingDiverged as e:           # the other members go on; the vote leaves it out
                self.log(f"{name}: {e}")

    def results(self, skipped: set, deadline: Deadline | None) -> RecipeResult:
        """The members' rows for the table (from their summary.json)."""
        result = RecipeResult(self.recipe.name, self.budget, str(self.data_dir))
        for name in self.chosen:
            not_started = deadline is not None and name in deadline.not_started
            result.members.append(member_result(name, RunDir(self.root / name), name in skipped, not_started))
        return result

    # what the stages after the vote ask of the run (kit.rounds.StageHost)
    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def which(self) -> str:
        return self.recipe.after["which"]

    def ensemble(self, run_dirs: list[Path], name: str, val_from: list[Path] | None = None) -> dict:
        plan = self.recipe.after
        one = len(run_dirs) == 1        # its own predictions, labelled "single" as a vote that chose one is
        weights = "auto" if one or plan["weights"] == "auto" else None
        return ensemble_runs(run_dirs, vote="auto" if one else plan["ensemble"], weights=weights, name=name,
                             out_dir=self.submissions, log=self.log, val_from=val_from, competition=self.competition)

    def predict(self, run_dir: Path, which: str | None = None) -> dict | None:
        """Predict a run dir unless its predictions are current (a fine-tune: in its source's mode only)."""
        which = which or self.which
        if RunDir(run_dir).predicted(which):            # by its worker, or by an earlier run
            return None
        if not run_dir.is_dir():
            raise KitError(f"{run_dir}: gone while this recipe ran (another `kit recipe run --fresh`?); run it again")
        self.log(f"predicting {run_dir.name}")
        mode = source_mode(load_config(run_dir))
        return predict_run(run_dir, store=self.store, which=which, progress=self.progress, mode=mode,
                           compare=not mode)


def _in_time(deadline: Deadline, result: RecipeResult, run_dirs: list[Path], which: str) -> bool:
    """--max-hours: whether predict, ensemble and submit go ahead now: only when every member has
    finished and their predictions and the end fit before the deadline; else result.resume says
    what the next session's re-run will do."""
    unfinished = [m.name for m in result.members if m.note.startswith(("stopped at", "not started"))]
    if unfinished:
        result.resume = (f"{len(unfinished)} member(s) not finished before the --max-hours deadline "
                            f"({', '.join(unfinished)}): re-run the same command (next session) to continue "
                            "them; predict, ensemble and submit follow once every member has finished")
    else:
        needed = deadline.after_needs([d.name for d in run_dirs if not RunDir(d).predicted(which)])
        if deadline.time_for_after(needed):
            return True
        result.resume = (f"every member has finished, but predict, ensemble and submit (about "
                            f"{needed / 60:.1f} min) do not fit before the --max-hours deadline: re-run the "
                            "same command (next session) to do them")
    return False


def _voters(members: list[MemberResult], root: Path, log) -> list[MemberResult]:
    """The members that are predicted and voted: every one whose training did not diverge."""
    diverged = [m.name for m in members if m.diverged]
    voters = [m for m in members if not m.diverged]
    if not voters:
        raise KitError(f"{root}: every member diverged ({', '.join(diverged)}), so there is nothing to vote; "
                       "lower train.lr in the recipe and re-run with --fresh")
    if diverged:
        log(f"{', '.join(diverged)} diverged: predicting and voting without {'it' if len(diverged) == 1 else 'them'} "
            f"({len(voters)} member(s) left: {', '.join(m.name for m in voters)})")
    return voters


def _after(run: RecipeRun, result: RecipeResult) -> None:
    """predict -> ensemble -> (pseudo-labelling rounds, refit, distillation) -> submit, as far as the
    recipe's [after] table asks."""
    recipe, log, plan = run.recipe, run.log, run.recipe.after
    if not plan["predict"]:
        return
    members = _voters(result.members, run.root, log)
    run_dirs = [Path(m.run_dir) for m in members]
    for run_dir in run_dirs:
        run.predict(run_dir)
    for run_dir, member in zip(run_dirs, members, strict=True):     # the table shows predicted accuracy
        ids = PredictionIds.load(run_dir)
        member.val_acc, member.mode = ids.val_acc, ids.inference_mode or ""
    if plan["ensemble"] == "none":
        return
    if enabled(plan, "lmft") is not None:
        run_dirs = lmft_stage(run, plan, [m.name for m in members], run_dirs, result)
    log(f"ensembling {len(run_dirs)} member(s) by {plan['ensemble']} vote")
    rounds = enabled(plan, "pseudo") is not None
    voted = recipe.name + ("-before-refit" if enabled(plan, "refit") else "")     # the refit votes NAME itself
    ens = run.ensemble(run_dirs, f"{recipe.name}-vote0" if rounds else voted)
    if rounds:
        result.vote0 = VoteResult(ens["val_acc"], str(ens["csv"]), plan["ensemble"], ens.get("oof_acc"))
        names = [m.name for m in members]
        start, end = stage_span(run.plan, plan, "pseudo")
        run_dirs = pseudo_rounds(run, plan["pseudo"], names, run_dirs, result, start, end)
        if result.rounds:
            log(f"ensembling the {len(run_dirs)} fine-tuned member(s) by {plan['ensemble']} vote")
        ens = run.ensemble(run_dirs, voted)     # no round: the same vote
    result.ensemble = VoteResult.of(ens, plan, run_dirs)
    # of the vote fitted on held-out validation, before any refit; also draws NAME_report.png beside the CSV.
    # The cut is left out: the recipe's own table prints it (kit.cli.recipe_table).
    report = report_runs(run_dirs, ensemble_result=ens, audition=False)
    result.report = format_report(report)
    if enabled(plan, "refit") is not None:
        run_dirs, ens = refit_stage(run, plan, [m.name for m in members], run_dirs, result)
    if enabled(plan, "distill") is not None:
        distill_stage(run, plan["distill"], run_dirs, result)
    if not plan["submit"]:
        return
    message = submission_message(plan["message"] or "kit recipe {recipe} ({budget} budget)", recipe.name,
                                 result.budget, run_dirs, ens)
    # The ledger sits beside the vote's CSV (run.submissions/ledger.csv), where `kit scores --ledger` finds it.
    # It says "submitting CSV" once every check has passed, or why it sends nothing.
    send = partial(recipe_submit, data_dir=run.data_dir, submissions_dir=run.submissions, endpoint=run.endpoint,
                   competition=run.competition, log=log, recipe_root=run.root)
    result.submission = send(ens["csv"], message)
    student = result.student
    if enabled(plan, "distill") and plan["distill"]["submit"] and student is not None and student.csv:
        student.submission = send(student.csv, message + " (distilled student)")
