"""`kit train` (one model into a run dir) and `kit recipe run` (a whole zoo, then predict,
ensemble and submit); argument parsing and printing only.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kit.budget import lost_time_note
from kit.cli import add_cache_option, cache_from, one_line_errors, progress_wanted
from kit.cli.recipe_table import print_recipe_table
from kit.config import DataConfig, RunConfig, layered, load_toml, parse_overrides
from kit.env import check_stopped, kaggle_data_dir
from kit.errors import KitError
from kit.launch import make_launcher
from kit.rundir import RunDir
from kit.runs import check_out, check_resume_target, is_run_dir, move_aside, old_name
from kit.runs_folder import check_not_recipes_folder, check_runs_folder
from kit.written import keep_finished

if TYPE_CHECKING:        # kit.recipe_result brings torch: `kit --help` would take seconds
    from kit.recipe_result import RecipeResult

DDP_HELP = """one model on several devices (DDP), same arguments:
  GPUs: accelerate launch --multi_gpu --num_processes N -m kit.train --data DIR --out RUN ...
  CPU:  torchrun --nproc_per_node 2 -m kit.train --data DIR --out RUN ...
train.batch_size is per process; train.max_steps counts optimizer steps."""


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data dir (default: the config's data.data_dir; in a Kaggle notebook the "
                   "competition under /kaggle/input)")
    p.add_argument("--out", required=True, help="run dir to write (config, split, checkpoints, metrics)")
    p.add_argument("--config", help="member TOML: [data] [model] [augment] [train] [infer] overrides")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--fresh", action="store_true", help="start over: move an existing RUN_DIR aside to "
                   "RUN_DIR.old-<time> first (nothing is deleted)")
    p.add_argument("--budget", help="the recipe budget's name, recorded in RUN_DIR/identity.json")
    p.add_argument("--minutes", type=float, help="time budget: the step total, warm-up and evaluations are "
                   "fitted to it, so the run ends annealed (train.minutes)")
    p.add_argument("--max-minutes", type=float, help="stop cleanly with a checkpoint after this long")
    p.add_argument("--allow-external-labels", action="store_true", help="train on a data.pseudo_labels CSV that "
                   "`kit pseudo` did not write (no pseudo.json beside it) (data.allow_external_labels)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_cache_option(p)


def register(sub) -> None:
    p = sub.add_parser("train", help="train one model into a run dir", epilog=DDP_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    recipe = sub.add_parser("recipe", help="run a recipe: train its members, predict, ensemble, submit")
    rsub = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    p = rsub.add_parser("run", help="run recipes/<tier>.toml end to end (re-running continues)")
    p.add_argument("file", help="recipe TOML, e.g. recipes/boss.toml")
    p.add_argument("--data", help="data dir (default: the competition under /kaggle/input in a Kaggle notebook, "
                   "else data/demo, generated when missing)")
    p.add_argument("--budget", choices=["quick", "full"],
                   help="default: the one the recipe's members trained at (a re-run); else quick on synthetic "
                        "data, full on real data where a GPU trains it (here, or --launcher's), quick without one")
    p.add_argument("--runs", default="runs", help="where run dirs go: RUNS/<recipe>/<member> (default: runs)")
    p.add_argument("--only", nargs="+", metavar="MEMBER", help="train and predict only these members (a,b or a b); "
                   "no vote or submission")
    p.add_argument("--workers", type=int, help="members trained at once (default: one per GPU, "
                   "or one per CPU core on a CPU; 1 = one after another in this process)")
    p.add_argument("--minutes", type=float, help="wall-clock allowance for the whole recipe: shared among the "
                   "members left to train, each fitting its LR schedule to its share")
    p.add_argument("--member-minutes", type=float, help="training minutes per member (replaces the recipe's "
                   "train.minutes); the LR schedule is fitted to it")
    p.add_argument("--no-after", action="store_true", help="train only: skip predict, ensemble and submit")
    p.add_argument("--no-ensemble", action="store_true", help="train and predict the members only: no ensemble, "
                   "no submission (what a launcher's kernel or job runs)")
    p.add_argument("--fresh", action="store_true", help="start the chosen members over: their old run dirs "
                   "move to RUNS/<recipe>.old-<time>/ (nothing is deleted)")
    p.add_argument("--max-hours", type=float, metavar="H",
                   help="hard stop for this command, e.g. the time left in a notebook session: each member "
                        "checkpoints and stops before it (members it leaves too little time are not started); "
                        "re-running the same command continues from the run dirs")
    switches = {      # on or off against the recipe
        "--lmft": "before the vote, fine-tune every member with a margin head (AM-/AAM-Softmax) on longer crops at "
                  "the full margin (large-margin fine-tuning; the recipe's [after] lmft settings) and vote those",
        "--pseudo": "after the vote, pseudo-label confident test utterances, fine-tune the members the vote relies "
                    "on with them and vote again (the recipe's [after] pseudo settings)",
        "--refit": "after the vote, fine-tune every voted member on train + validation (the utterances validation "
                   "held out) and submit the same vote of the refit members (its method, temperatures and weights "
                   "fitted before; the recipe's [after] refit settings)",
        "--distill": "after the vote, train one student on its soft targets: NAME-student.csv",
        "--audition": "try the recipe's candidates on this competition for a share of their time and keep the best "
                      "[audition] keep of them as the members voted (kit.audition; boss auditions in its quick "
                      "budget); --no-audition trains the fixed members"}
    for flag, text in switches.items():
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                       help=text + "; default: as the recipe says")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_rehearse_args(p)
    add_cache_option(p)
    _add_launcher_args(p)
    p.set_defaults(func=cmd_recipe_run)

    _register_cost(rsub)


def _add_rehearse_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rehearse", action="store_true", help="rehearse the whole job at its real shapes, briefly, on "
                   "this machine (kit.rehearse): every member of the budget (default full) a few steps on a real-size "
                   "competition (the full-rehearsal preset, generated into data/ when --data is not given), stopped "
                   "and resumed, then prediction, the vote, report, pseudo-labels, distillation and the submission to "
                   "the local stand-in; prints each stage's time and peak memory and the budget's cost; exit 1 when "
                   "something would not fit on Kaggle")
    p.add_argument("--steps", type=int, default=None,
                   help="with --rehearse: training steps per member (default 2: stopped after 1, resumed)")


def _register_cost(rsub) -> None:
    p = rsub.add_parser("cost", help="what a recipe's budget costs: FLOPs counted on the members' real shapes, "
                        "projected GPU hours on Kaggle's P100 and T4 x2 and on an H100, and whether it fits a "
                        "Kaggle week")
    p.add_argument("file", help="recipe TOML, e.g. recipes/boss.toml")
    p.add_argument("--budget", choices=["quick", "full"], default="full", help="default: full")
    p.add_argument("--data", help="count prediction over this data dir's utterances (default: the real data's "
                   "sizes and lengths)")
    p.add_argument("--utilisation", type=float, default=None, metavar="U",
                   help="share of each GPU's fp16/bf16 peak reached, 0-1 (default: kit.cost's assumption per GPU)")
    p.add_argument("--measure", nargs="?", type=int, const=30, default=None, metavar="STEPS",
                   help="also time STEPS training steps (default 30) of each member on this machine's GPU (or CPU) "
                   "at its real shapes, and print the hours the budget takes there")
    p.add_argument("--audition", action="store_true",
                   help="cost the recipe's audition in this budget (kit recipe run --audition): every candidate to "
                   "its cut, the best [audition] keep on to the end, beside the fixed members")
    p.set_defaults(func=cmd_recipe_cost)


def _add_launcher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the members train", "the ensemble, report and submission run here in every case; "
                             "with kaggle or slurm, --max-hours is each kernel's or job's time limit")
    g.add_argument("--launcher", choices=["local", "kaggle", "slurm"], default="local",
                   help="local: this machine (default); kaggle: Kaggle kernels on their GPUs, pushed and pulled back "
                        "with your credentials (a synthetic competition rehearses on a local stand-in); slurm: one "
                        "submitit job per member, run dirs on the shared file system")
    g.add_argument("--kernels", type=int, help="kaggle: kernels at once, the members shared among them (default 2)")
    g.add_argument("--competition", help="the competition the vote is submitted to (and, with --launcher kaggle, "
                                         "that the kernels read); default: the synthetic data's, else the one "
                                         "`kit data download` fetched --data from, else ml2022spring-hw4")
    g.add_argument("--endpoint", help="kaggle: a local stand-in URL (`kit kaggle serve`); also KIT_KAGGLE_ENDPOINT")
    g.add_argument("--slurm-partition", help="slurm: the partition to submit to")
    g.add_argument("--submitit-cluster", choices=["slurm", "local"],
                   help="slurm: where submitit runs the jobs (default slurm; local: on this machine, to rehearse)")


def resolve_train_config(args: argparse.Namespace):
    """The RunConfig `kit train` uses: defaults <- saved config (on --resume) or --config <- --set
    <- --data, --minutes, --max-minutes, --allow-external-labels."""
    out = Path(args.out)
    if args.config:
        file = (args.config, load_toml(args.config))
    elif args.resume and (out / "config.toml").is_file():
        file = (str(out / "config.toml"), load_toml(out / "config.toml"))
    else:
        file = ("config", {"name": out.name})
    train_flags = {"minutes": args.minutes, "max_minutes": args.max_minutes}
    flags = {"train": {k: v for k, v in train_flags.items() if v is not None}}
    data_flags = {"data_dir": args.data, "allow_external_labels": args.allow_external_labels or None}
    flags["data"] = {k: v for k, v in data_flags.items() if v is not None}
    cfg = layered(file, ("--set", parse_overrides(args.overrides)), ("command line", flags))
    if not args.data and cfg.data.data_dir == DataConfig.data_dir:
        found = kaggle_data_dir()
        if found is not None:
            print(f"kit: no --data given: using the competition data found at {found}", file=sys.stderr)
            cfg.data.data_dir = str(found)
    if cfg.name == RunConfig.name:
        cfg.name = out.name
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    # deferred: brings torch; `kit --help` imports only the parsers
    from kit.train import train

    if args.fresh and args.resume:
        raise KitError("--fresh and --resume: choose one (start over, or continue)")
    for flag, value in (("--minutes", args.minutes), ("--max-minutes", args.max_minutes)):
        if value is not None and not (math.isfinite(value) and value > 0):      # probe 49: 0 trained max_steps
            raise KitError(f"{flag} {value:g}: must be a positive number of minutes (leave it out for none)")
    check_out(args.out)         # before --resume reads its config.toml or --fresh moves anything
    if args.resume:
        check_resume_target(args.out, lambda line: print(f"kit: {line}", file=sys.stderr))
    run = RunDir.of(args.out)
    done = run.summary() if args.resume and run.finished else None
    cfg = resolve_train_config(args)
    if args.fresh and is_run_dir(args.out):     # a folder of only kit's leftovers is trained into as it is
        print(f"kit: {args.out}: starting over; the old run moved to {move_aside(args.out, old_name(args.out))}",
              file=sys.stderr)
    summary = train(cfg, args.out, resume=args.resume, progress=not args.no_progress and progress_wanted(),
                    budget=args.budget, callbacks=[_SaysResuming(args.out)])
    if (kept := keep_finished(args.out, done, summary)) is not None:
        summary = kept
        print(f"kit: {args.out}: already finished at step {kept.get('step')} (stopped: {kept.get('stopped_reason')}); "
              "nothing trained, its summary.json kept (--fresh starts over)", file=sys.stderr)
    # deferred: accelerate brings torch; `kit --help` imports only the parsers
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2))
        note = lost_time_note(summary, cfg.train.minutes)
        if note:
            print(f"kit: warning: {note}", file=sys.stderr)
        if kept is None and RunDir.of(args.out).stopped_at_time_limit:     # probe 57 F4: it said nothing
            print(f"kit: {args.out}: stopped at this session's time limit (--max-minutes {cfg.train.max_minutes:g}) at "
                  f"step {summary['step']:,} of {summary['total_steps']:,}; {_continues(args.out)}", file=sys.stderr)
    return 0


def _continues(out: Path) -> str:
    """How a run stopped at a session's time limit goes on: a recipe's member (its member.toml) with the recipe."""
    if (Path(out) / "member.toml").is_file():
        return "`kit recipe run ... --resume` continues it with the rest of its recipe"
    return f"`kit train --out {out} --resume` continues it"


class _SaysResuming:
    """A train() callback: `kit train --resume` (and a recipe's member, whose train.log this is) says the step it
    goes on from (probe 57 F4: a resumed member looked like one started over)."""

    def __init__(self, out: Path):
        self.out = out

    def on_train_begin(self, trainer) -> None:
        st = trainer.state
        if trainer.main and st.step > 0:
            print(f"kit: {self.out}: resuming from step {st.step:,} of {st.plan.total:,}", file=sys.stderr, flush=True)


def train_main(argv: list[str]) -> int:
    """`python -m kit.train` / `accelerate launch -m kit.train`: the same arguments as `kit train`."""
    parser = argparse.ArgumentParser(prog="python -m kit.train", description="train one model (DDP-ready)")
    _add_train_args(parser)

    def run() -> int:
        args = parser.parse_args(argv)
        with cache_from(args):
            return cmd_train(args)

    return one_line_errors(run)


def cmd_recipe_run(args: argparse.Namespace) -> int:
    # deferred: brings torch; `kit --help` imports only the parsers
    from kit.members import trained_as_members
    from kit.recipe import load_recipe, require_budget
    from kit.timeplan import LEAST_MEMBER_SECONDS
    from kit.zoo import run_recipe

    def log(message: str) -> None:
        check_stopped()         # a stop Python lost in a callback is acted on here, before the next stage
        print(f"kit: {message}", file=sys.stderr, flush=True)

    # A budget asked for by name must be set up by the recipe (chosen for you: as it is). A launcher's
    # member job (--only ... --no-ensemble, kit.launch.common.member_args) always names the budget
    # chosen where it was launched, so it is not asked again there.
    if args.workers is not None and args.workers < 1:
        raise KitError(f"--workers {args.workers}: members trained at once, at least 1")
    check_runs_folder(args.runs)
    recipe = load_recipe(args.file)
    check_not_recipes_folder(args.runs, recipe.name, [member[0] for member in recipe.members],
                             trained_as_members(args.runs, recipe))
    if args.budget and not (args.only and args.no_ensemble):
        require_budget(recipe, args.budget)
    if args.rehearse:
        return _rehearse(args, log)
    if args.steps is not None:
        raise KitError("--steps goes with --rehearse")

    launcher = make_launcher(args.launcher, kernels=args.kernels, competition=args.competition,
                             endpoint=args.endpoint, partition=args.slurm_partition, cluster=args.submitit_cluster)
    if args.launcher != "local" and args.workers is not None:
        log(f"--workers {args.workers}: the members train on the {args.launcher} launcher"
            + (" (--kernels sets how many at once)" if args.launcher == "kaggle" else " (one job each)")
            + "; --workers applies only to what runs here (the fine-tunes of --pseudo)")
    if args.minutes is not None and args.member_minutes is not None:
        raise KitError("--minutes and --member-minutes: give one (the recipe's minutes shared among its members, "
                       "or each member's own)")
    if args.member_minutes is not None and 0 < args.member_minutes * 60 < LEAST_MEMBER_SECONDS:
        raise KitError(f"--member-minutes {args.member_minutes:g}: under {LEAST_MEMBER_SECONDS:g} seconds a member, "
                       f"too little to train one (the least --minutes gives); give at least "
                       f"{LEAST_MEMBER_SECONDS / 60:.2f}")
    only = [m.strip() for part in args.only for m in part.split(",") if m.strip()] if args.only else None
    if args.only and not only:          # `--only ,`: no member named, never "every member, vote and send"
        raise KitError(f"--only {' '.join(args.only)!r}: names no member (give them as a,b or a b)")
    result = run_recipe(args.file, data=args.data, budget=args.budget, runs=args.runs, only=only,
                        after=not args.no_after, workers=args.workers, minutes=args.minutes,
                        per_member_minutes=args.member_minutes, fresh=args.fresh, max_hours=args.max_hours,
                        pseudo=args.pseudo, distill=args.distill, refit=args.refit, lmft=args.lmft,
                        progress=not args.no_progress and progress_wanted(), log=log, launcher=launcher,
                        ensemble="none" if args.no_ensemble else None, audition=args.audition,
                        competition=args.competition)
    print_recipe_table(result)
    failed = _failed_submissions(result)
    if failed:     # after the table: everything the run made is printed and kept
        raise KitError("; ".join(failed))
    return 0


def _failed_submissions(result: RecipeResult) -> list[str]:
    """One phrase per submission of the recipe that FAILED or was scored ERROR, or was made but is in
    no ledger (a SKIPPED one, with no credentials for real data, is no failure)."""
    sent = [(result.ensemble.csv if result.ensemble else None, result.submission)]
    if result.student is not None:
        sent.append((result.student.csv, result.student.submission))
    failed = []
    for csv, sub in sent:
        reason = (sub.get("reason") or "no reason given").splitlines()[0] if sub else ""
        reason = reason.removeprefix(f"submission of {csv} failed: ")      # the line names the CSV once
        if sub and sub.get("status") in ("FAILED", "ERROR"):
            where = "the ledger row records the failure" if sub.get("recorded", True) else "no ledger row was written"
            kept = "" if "the CSV is kept" in reason else "the CSV is kept and "      # said once
            failed.append(f"the submission of {csv} {sub['status']}: {reason}; {kept}{where}")
        elif sub and not sub.get("recorded", True):      # made, but only a pending file holds its row
            failed.append(f"the submission of {csv} was made ({sub['status']}) but not recorded: {reason}")
    return failed


def _rehearse(args: argparse.Namespace, log) -> int:
    # deferred: bring torch; `kit --help` imports only the parsers
    from kit.cost import cost_table
    from kit.recipe import load_recipe, require_budget
    from kit.rehearse import STEPS, rehearse, stage_table

    budget = args.budget or "full"
    require_budget(load_recipe(args.file), budget)
    if args.launcher != "local" or args.only or args.fresh or args.max_hours or args.minutes or args.member_minutes:
        raise KitError("--rehearse runs every member here, briefly: leave out --launcher, --only, --fresh, "
                       "--max-hours, --minutes and --member-minutes")
    out = rehearse(args.file, args.data, budget, args.runs, steps=args.steps or STEPS,
                   progress=not args.no_progress and progress_wanted(), log=log)
    print(f"rehearsal of {out['recipe']} ({budget} budget) on {out['data']}: {out['minutes']:.1f} min")
    print(stage_table(out["stages"]))
    print()
    print_recipe_table(out["result"])
    print()
    print(cost_table(out["costs"]))
    problems = out["problems"]
    for problem in problems:
        log(f"would not fit on Kaggle: {problem}")
    if not problems:
        log("rehearsal passed: every stage ran at the real shapes and fits a Kaggle GPU session")
    return 1 if problems else 0


def cmd_recipe_cost(args: argparse.Namespace) -> int:
    # deferred: bring torch; `kit --help` imports only the parsers
    from kit.cost import audition_lines, cost_table, counted_in_steps, measure_members, measured_table, recipe_costs
    from kit.recipe import load_recipe, require_budget

    recipe = load_recipe(args.file)
    require_budget(recipe, args.budget)
    if not counted_in_steps(recipe, args.budget):
        raise KitError(f"{recipe.path}: the {args.budget} budget is counted in wall-clock minutes, not steps: its "
                       "cost is its time (kit recipe cost is for a budget of steps, such as full)")
    if args.utilisation is not None and not 0 < args.utilisation <= 1:
        raise KitError(f"--utilisation {args.utilisation}: a share of the GPU's peak in (0, 1]")
    if args.measure is not None and args.measure < 1:
        raise KitError(f"--measure {args.measure}: a number of steps, at least 1")
    costs = recipe_costs(recipe, args.budget, args.data, args.audition)     # a bad --data stops here, stdout empty
    print(f"recipe {recipe.name} ({args.budget} budget{', audition' if args.audition else ''})")
    print(cost_table(costs, args.utilisation))
    rates = None
    if args.measure:
        rates = measure_members(recipe, args.budget, args.measure, args.data, audition=args.audition,
                                log=lambda line: print(f"kit: {line}", file=sys.stderr, flush=True))
        print()
        print(measured_table(costs, rates))
    if args.audition:
        spec = recipe.audition_for(args.budget)
        print()
        fixed = recipe_costs(recipe, args.budget, args.data)                # what --no-audition trains
        print("\n".join(audition_lines(costs, fixed, spec, args.utilisation, rates)))
    return 0
