"""Recipe stages after the members ([after] lmft, pseudo, refit and distill in a recipe):

  lmft     large-margin fine-tuning: every member with a margin head fine-tuned on longer crops at
           the full margin (<member>-lm), predicted; the vote is of the fine-tuned members.
  pseudo   the vote labels the test utterances it is confident about (kit.pseudo); every member
           is fine-tuned from its checkpoint on train + those utterances (<member>-pl<r>); they
           re-predict and re-vote. `rounds` times.
  distill  one student (the best member's model, from its weights) trained on the final vote's
           soft targets (kit.distill); written as NAME-student.csv, a one-model submission.

Both take a share of the recipe's time: with a time budget the members train for
(1 - pseudo.share - distill.share) of it and the stages share the rest; without one (the full
budget) a fine-tune gets `share` of the member's max_steps. Re-running continues: finished
fine-tunes are kept while their inputs are unchanged, and moved aside when they changed; so is the
student, while its teachers' predictions and its temperature and weight are unchanged.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kit.config import to_dict
from kit.distill import TEACHERS_JSON, best_member, changed_settings, distill, load_members
from kit.errors import KitError
from kit.fsio import read_json, sha256_file, write_json
from kit.identity import run_identity
from kit.pseudo import TEACHER, make_pseudo_labels
from kit.recipe_result import RecipeResult, RoundResult, StudentResult, VoteResult
from kit.records import predicted_mode
from kit.rundir import RunDir
from kit.runs import move_aside, old_name, reuse_changes, update_infer
from kit.timeplan import TimePlan
from kit.train import TrainingDiverged, load_config

if TYPE_CHECKING:
    from kit.config import RunConfig

PSEUDO_DEFAULTS = {"enabled": True, "rounds": 1, "precision": 0.9, "top_fraction": None, "share": 0.3,
                   "lr_scale": 0.25, "warmup_steps": 20, "fine_tune": "weighted"}
MIN_WEIGHT = 0.05       # fine_tune = "weighted": members the vote gives less than this are kept as they are
DISTILL_DEFAULTS = {"enabled": True, "share": 0.2, "temperature": 1.0, "weight": 0.5, "submit": False}
TEACHING_NAMES = {"temperature": "temperature", "distill_weight": "weight"}    # kit.distill's -> its names
REFIT_DEFAULTS = {"enabled": True, "share": 0.2, "lr_scale": 0.25, "warmup_steps": 20}
# WeSpeaker's large-margin fine-tuning (conf/resnet_lm.yaml: 5 epochs after 150, crops 200 -> 600
# frames, AAM margin 0.2 -> 0.5 fixed, lr 1e-4 -> 2.5e-5 after 0.1 -> 5e-5 with SGD).
LMFT_DEFAULTS = {"enabled": True, "share": 0.1, "lr_scale": 0.1, "warmup_steps": 20, "margin": 0.5,
                 "segment_scale": 3.0}
MARGIN_HEADS = ("amsoftmax", "aamsoftmax")
STAGES = ("lmft", "pseudo", "refit", "distill")          # in the order they run
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {"lmft": LMFT_DEFAULTS, "pseudo": PSEUDO_DEFAULTS, "refit": REFIT_DEFAULTS,
                                               "distill": DISTILL_DEFAULTS}


def parse_stage(where: str, key: str, value, defaults: dict) -> dict | None:
    """[after] pseudo / distill: false or absent (off), true (defaults) or a table of settings
    (`enabled = false` keeps the settings but leaves the stage off: `kit recipe run --pseudo` turns
    it on). Returns the settings, with "enabled"."""
    if value in (None, False, True):
        value = {"enabled": bool(value)}
    if not isinstance(value, dict):
        raise KitError(f"{where}: [after] {key} must be true, false or a table like {{ share = 0.3 }}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise KitError(f"{where}: [after] {key}: unknown key(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
    opts = {**defaults, **value}
    if key == "pseudo" and value.get("top_fraction") is not None and "precision" not in value:
        opts["precision"] = None                # a top fraction given alone replaces the default precision
    if not isinstance(opts["enabled"], bool):
        raise KitError(f"{where}: [after] {key}.enabled {opts['enabled']!r}: true or false")
    if not (isinstance(opts["share"], (int, float)) and 0 < opts["share"] < 1):
        raise KitError(f"{where}: [after] {key}.share {opts['share']!r}: a fraction of the time in (0, 1)")
    for name in ("lr_scale", "margin", "segment_scale"):
        v = opts.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf):
            raise KitError(f"{where}: [after] {key}.{name} {v!r}: a positive number")
    if key == "lmft" and opts["segment_scale"] < 1:
        raise KitError(f"{where}: [after] lmft.segment_scale {opts['segment_scale']!r}: at least 1 (longer crops)")
    if key == "pseudo":
        if not (isinstance(opts["rounds"], int) and opts["rounds"] >= 1):
            raise KitError(f"{where}: [after] pseudo.rounds {opts['rounds']!r}: a whole number >= 1")
        for name in ("precision", "top_fraction"):
            v = opts[name]
            if v is not None and not (isinstance(v, (int, float)) and 0 < v <= 1):
                raise KitError(f"{where}: [after] pseudo.{name} {v!r}: a fraction in (0, 1]")
        if opts["fine_tune"] not in ("weighted", "all"):
            raise KitError(f"{where}: [after] pseudo.fine_tune {opts['fine_tune']!r}: \"weighted\" (the members "
                           "the vote relies on) or \"all\"")
    return opts


def enabled(after: dict, key: str) -> dict | None:
    """The stage's settings when it is on, else None."""
    opts = after.get(key)
    return opts if opts and opts.get("enabled") else None


def stages_share(after: dict) -> float:
    """The share of the recipe's time the stages after the vote take."""
    return sum((enabled(after, k) or {}).get("share", 0.0) for k in STAGES)


def stage_span(plan: TimePlan, after: dict, key: str) -> tuple[float, float]:
    """(start, end) of the stage `key` as shares of the recipe's time: it follows the members and the
    stages before it that are on (STAGES' order), and takes its share of the stages' part."""
    on = [k for k in STAGES if enabled(after, k)]
    before = sum(after[k]["share"] for k in on[:on.index(key)])
    start = plan.stage_span(before)[1] if before else plan.members_end
    return start, plan.stage_span(before + after[key]["share"])[1]


class StageHost(Protocol):
    """What the stages need of the recipe run: kit.zoo.RecipeRun is one (its own fields and methods,
    no callbacks passed in)."""
    root: Path                                  # runs/<recipe>
    budget: str                                 # the recipe budget's name (recorded in identity.json)
    store: Any                                  # the recipe's kit.data.FeatureStore, open
    progress: bool
    plan: TimePlan                              # the recipe's clock: a stage's minutes from the time left

    @property
    def log(self) -> Callable[[str], None]: ...

    @property
    def name(self) -> str: ...                  # the recipe's name: submission file names

    @property
    def which(self) -> str: ...                 # the checkpoint members are predicted from

    def config(self, name: str) -> RunConfig: ...       # the recipe's member `name`

    def train_jobs(self, jobs: list, slots: list | None = None, share=None) -> None: ...   # predicts too

    def ensemble(self, run_dirs: list[Path], name: str, val_from: list[Path] | None = None) -> dict: ...

    def predict(self, run_dir: Path, which: str | None = None) -> dict | None: ...   # unless predicted already


def pseudo_rounds(ctx: StageHost, opts: dict, names: list[str], run_dirs: list[Path], result: RecipeResult,
                  start: float, end: float) -> list[Path]:
    """Run opts["rounds"] pseudo-labelling rounds; returns the last round's run dirs. start, end: the
    shares of the recipe's time at which the stage starts and ends (round r ends at
    start + (end - start) * r / rounds)."""
    result.rounds = []
    for r in range(1, opts["rounds"] + 1):
        rec = make_pseudo_labels(run_dirs, ctx.root / f"pseudo-{r}", precision=opts["precision"],
                                 top_fraction=opts["top_fraction"])
        ctx.log(f"pseudo-labels, round {r}: {rec.describe()}")
        if rec.test_count == 0:
            ctx.log(f"round {r}: nothing to fine-tune on; the vote stays as it is (a lower [after.pseudo] "
                    "precision, or top_fraction, labels more)")
            break
        tuned = to_fine_tune(names, rec.weights, opts["fine_tune"])
        kept = [n for n in names if n not in tuned]
        if kept:
            ctx.log(f"round {r}: fine-tuning {', '.join(tuned)}; {', '.join(kept)} kept as is (weight "
                    f"below {MIN_WEIGHT} in the vote; fine_tune = \"all\" tunes every member)")
        sources = dict(zip(names, run_dirs, strict=True))
        tuned_dirs = {n: ctx.root / f"{n}-pl{r}" for n in tuned}
        jobs = _fine_tune_jobs(ctx, opts, tuned, [sources[n] for n in tuned], f"pl{r}", rec.csv)
        round_end = start + (end - start) * r / opts["rounds"]
        per_round = opts["share"] / opts["rounds"]
        ctx.train_jobs(jobs, share=ctx.plan.sharer(round_end, per_round))
        diverged = {}                   # a fine-tune that diverged is never predicted: its source votes
        for n in tuned:
            step = RunDir(tuned_dirs[n]).diverged_at
            if step is not None:
                ctx.log(f"{tuned_dirs[n].name} diverged at step {step}: the round votes {sources[n].name} instead")
                diverged[str(tuned_dirs.pop(n))] = {"step": step, "voted": str(sources[n])}
        run_dirs = [tuned_dirs.get(n, sources[n]) for n in names]
        for d in tuned_dirs.values():
            ctx.predict(d)
        result.rounds.append(RoundResult(r, str(rec.csv), rec.test_count, rec.threshold, rec.estimated_precision,
                                         [str(d) for d in run_dirs], [str(d) for d in tuned_dirs.values()],
                                         diverged))
    return run_dirs


def lmft_stage(ctx: StageHost, after: dict, names: list[str], run_dirs: list[Path],
               result: RecipeResult) -> list[Path]:
    """Large-margin fine-tuning (WeSpeaker's LM, after IDLab's VoxSRC-20 system): every member with a
    margin head (AM-/AAM-Softmax; others are kept as they are) fine-tuned from its checkpoint
    (<member>-lm) on crops `segment_scale` times longer, at the margin `margin` from the first step
    (no warm-up), at `lr_scale` of its learning rate, until its share of the recipe's time ends
    (untimed: share / segment_scale of its max_steps, so that it costs about `share` of the
    member's compute), then predicted. Returns the run dirs to vote: each fine-tuned member in its
    member's place (one that diverged: the member); result.lmft lists the fine-tunes voted."""
    opts = after["lmft"]
    tuned = [n for n in names if ctx.config(n).model.head in MARGIN_HEADS]
    if not tuned:
        ctx.log("lmft: no member has a margin head (AM-/AAM-Softmax): nothing to fine-tune, the vote goes on")
        return run_dirs
    sources = dict(zip(names, run_dirs, strict=True))
    _, end = stage_span(ctx.plan, after, "lmft")
    jobs = _fine_tune_jobs(ctx, opts, tuned, [sources[n] for n in tuned], "lm",
                           adjust=lambda cfg: _large_margin(cfg, opts, ctx.plan.timed))
    ctx.log(f"lmft: {', '.join(tuned)} fine-tuned on {opts['segment_scale']:g}x longer crops at margin "
            f"{opts['margin']:g}" + (f" until {end:.0%} of the recipe's time" if ctx.plan.timed else ""))
    ctx.train_jobs(jobs, share=ctx.plan.sharer(end, opts["share"]))
    out = _in_place(ctx, names, run_dirs, "lm", tuned)
    result.lmft = [str(d) for d in out if d not in run_dirs]
    return out


def _large_margin(cfg: RunConfig, opts: dict, timed: bool) -> None:
    """A member's config turned into its large-margin fine-tune's: longer crops, the full margin."""
    scale = float(opts["segment_scale"])
    cfg.data.segment_len = max(1, round(cfg.data.segment_len * scale))
    cfg.model.am_m, cfg.model.margin_warmup_steps = float(opts["margin"]), 0
    if not timed:               # each step costs about `scale` times a member's
        cfg.train.max_steps = max(1, round(cfg.train.max_steps / scale))
        cfg.train.eval_every = max(1, cfg.train.max_steps // 4)


def refit_stage(ctx: StageHost, after: dict, names: list[str], run_dirs: list[Path],
                result: RecipeResult) -> tuple[list[Path], dict]:
    """Every voted member fine-tuned from its checkpoint on train + validation (<member>-refit: the
    utterances validation held out are trained on too) until `end` of the recipe's time (untimed:
    `share` of its max_steps), predicted, and voted the way the vote before was fitted: its method,
    temperatures and weights fitted on the source members' validation predictions (the same fit),
    applied to the refit members' test predictions; nothing is fitted on what they trained on. A
    refit that diverged is replaced by its member. The vote before it (written as NAME-before-refit by
    kit.zoo) becomes result.before_refit; result.refits lists the refits voted. Returns the run dirs
    voted and the new vote (ensemble_runs' result), which is result.ensemble."""
    opts = after["refit"]
    _, end = stage_span(ctx.plan, after, "refit")
    jobs = _fine_tune_jobs(ctx, opts, names, run_dirs, "refit", train_on_val=True)
    ctx.log(f"refit: {', '.join(names)} fine-tuned on train + validation"
            + (f" until {end:.0%} of the recipe's time" if ctx.plan.timed else ""))
    ctx.train_jobs(jobs, share=ctx.plan.sharer(end, opts["share"]))
    refits = _in_place(ctx, names, run_dirs, "refit", names)
    result.refits = [str(d) for d in refits if d not in run_dirs]
    result.before_refit = result.ensemble
    ens = ctx.ensemble(refits, ctx.name, val_from=run_dirs)
    result.ensemble = VoteResult.of(ens, after, refits)
    return refits, ens


def _in_place(ctx: StageHost, names: list[str], run_dirs: list[Path], suffix: str, tuned: list[str]) -> list[Path]:
    """The run dirs a stage votes: each member of `tuned` replaced by its fine-tune <member>-<suffix>,
    unless that diverged (then the member, with a line), every one predicted."""
    out = []
    for name, src in zip(names, run_dirs, strict=True):
        d = ctx.root / f"{name}-{suffix}" if name in tuned else Path(src)
        if d != Path(src) and RunDir(d).diverged_at is not None:
            ctx.log(f"{d.name} diverged: the vote keeps {Path(src).name}")
            d = Path(src)
        ctx.predict(d)
        out.append(d)
    return out


def to_fine_tune(names: list[str], weights: list[float], how: str) -> list[str]:
    """The members a round fine-tunes: all, or those the vote gives at least MIN_WEIGHT (at least
    the heaviest one): a member the vote ignores would cost its training and prediction for
    nothing."""
    if how == "all" or len(weights) != len(names):
        return list(names)
    heaviest = max(range(len(names)), key=lambda k: weights[k])
    return [n for k, n in enumerate(names) if weights[k] >= MIN_WEIGHT or k == heaviest]


def _fine_tune_jobs(ctx: StageHost, opts: dict, names, run_dirs, suffix: str, csv: str = "",
                    train_on_val: bool = False, adjust: Callable[[RunConfig], None] | None = None) -> list[tuple]:
    """The fine-tune jobs <member>-<suffix> of a pseudo round (on train + the pseudo-labels `csv`), of
    the refit (`train_on_val`) or of the large-margin stage (`adjust` changes the config further),
    each from its source run's checkpoint at a scaled learning rate."""
    jobs = []
    for name, src in zip(names, run_dirs, strict=True):
        run_dir = ctx.root / f"{name}-{suffix}"
        cfg = ctx.config(name)
        cfg.name = run_dir.name
        cfg.train.init_from = str((Path(src) / f"{ctx.which}.pt").resolve())
        cfg.data.pseudo_labels = str(Path(csv).resolve()) if csv else ""
        cfg.data.train_on_val = train_on_val
        cfg.train.lr, cfg.train.warmup_steps = cfg.train.lr * float(opts["lr_scale"]), int(opts["warmup_steps"])
        cfg.train.evals = 1                     # validation once, at the end: predict scores it anyway
        cfg.model.margin_warmup_steps = 0       # its member's margin was warmed up: no new ramp from 0
        cfg.infer.mode = predicted_mode(src)    # predicted the way its member was: validation once
        if not ctx.plan.timed:
            cfg.train.max_steps = max(1, int(cfg.train.max_steps * opts["share"] / opts.get("rounds", 1)))
            cfg.train.eval_every = max(1, cfg.train.max_steps // 4)
        if adjust is not None:
            adjust(cfg)
        if run_dir.exists():
            if reuse_changes(run_dir, run_identity(cfg, ctx.store, ctx.budget)):
                ctx.log(f"{run_dir.name}: its member or training data changed; the old fine-tune moved to "
                        f"{move_aside(run_dir, old_name(run_dir))}")
        run = RunDir(run_dir)
        if run.finished:
            if not run.diverged:                # diverged earlier: pseudo_rounds says so
                changed = update_infer(run_dir, to_dict(cfg.infer))     # its member is predicted another way
                ctx.log(f"{run_dir.name}: already fine-tuned, kept"
                        + (f"; {', '.join(changed)}: predicted again that way" if changed else ""))
            continue
        jobs.append((run_dir.name, cfg, run_dir, run.has_checkpoint))
    return jobs


def distill_stage(ctx: StageHost, opts: dict, run_dirs: list[Path], result: RecipeResult) -> StudentResult:
    """Train and predict the student; write NAME-student.csv (a one-model submission). A student
    taught otherwise (by other members: they were retrained since; or at another [after.distill]
    temperature or weight), finished or not, is moved aside and trained again. A student whose
    training diverged is left out: result.student.diverged_at says so (no CSV), and the recipe goes
    on to submit the vote."""
    student = ctx.root / "student"
    teachers = {str(Path(d).resolve()): sha256_file(Path(d) / "test_probs.npy") for d in run_dirs}
    record = student / TEACHERS_JSON
    _set_aside_if_taught_otherwise(ctx, student, teachers, opts)
    overrides = ["train.cpu_threads=0"]         # in-process: every core
    if not ctx.plan.timed:
        steps = load_config(best_member(load_members(run_dirs))).train.max_steps
        overrides.append(f"train.max_steps={max(1, int(steps * opts['share']))}")
    done_before = RunDir(student).finished
    if not done_before:
        began = time.time()
        student.mkdir(parents=True, exist_ok=True)
        write_json(record, teachers)
        try:
            distill(run_dirs, student, overrides=overrides,
                    minutes=ctx.plan.stage_minutes(1.0, ["student"], share=opts["share"]) if ctx.plan.timed else None,
                    temperature=opts["temperature"], distill_weight=opts["weight"],
                    resume=(student / "last.pt").is_file(), progress=ctx.progress, log=ctx.log)
        except TrainingDiverged:
            if RunDir(student).diverged_at is None:    # its summary.json says so: left out below, like a member
                raise
        else:
            ctx.log(f"student trained and predicted in {(time.time() - began) / 60:.1f} min")
    step = RunDir(student).diverged_at
    if step is not None:                        # now or in an earlier run (the same teachers diverge again)
        ctx.log(f"student diverged at step {step}: no student CSV, the vote goes on alone (move {student} "
                "aside to distil again)")
        result.student = StudentResult(str(student), diverged_at=step)
        return result.student
    if done_before:     # distill() predicts the student it trains, from last.pt: the same file every run
        ctx.predict(student, which="last")
    ens = ctx.ensemble([student], f"{ctx.name}-student")
    val_acc = None if ens["val_acc"] is None else float(ens["val_acc"])      # a plain number in messages
    if load_config(student).data.train_on_val:
        # Taught by refit members, it starts from one and trains on validation too: its validation score
        # is in-sample (1.0 on tiny data), no estimate of its test score.
        ctx.log("student: trained on validation too (after the refit), so it has no held-out score")
        val_acc = None
    result.student = StudentResult(str(student), val_acc, str(ens["csv"]))
    return result.student


def _set_aside_if_taught_otherwise(ctx: StageHost, student: Path, teachers: dict, opts: dict) -> None:
    """Move the student aside (nothing is deleted) when it was taught by other teachers than
    `teachers` (teachers.json's format) or with another temperature or weight than `opts`, with a
    line saying why; the stage then trains it again."""
    if not student.exists():
        return
    # by the teachers' predictions, not their paths: a moved or copied runs folder keeps its student
    if sorted((_read_teachers(student / TEACHERS_JSON) or {}).values()) != sorted(teachers.values()):
        ctx.log(f"student: taught by other members before; moved to {move_aside(student, old_name(student))}")
        return
    try:
        changed = [f"{TEACHING_NAMES[k]} {old} -> {new}"
                   for k, (old, new) in changed_settings(student, opts["temperature"], opts["weight"]).items()]
    except KitError:                            # what it learnt from is unknown: teach it again
        changed = [f"its {TEACHER} is unreadable"]
    if changed:
        ctx.log(f"student: teaching changed ({', '.join(changed)}): trained again; the old one moved to "
                f"{move_aside(student, old_name(student))}")


def _read_teachers(path: Path) -> dict | None:
    """teachers.json of a student (None when it is missing or unreadable: teach it again)."""
    try:
        teachers = read_json(path, "the student's teachers")
    except KitError:
        return None
    return teachers if isinstance(teachers, dict) else None
