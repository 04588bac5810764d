"""`kit bench`: ratios of kit's fast paths against the course sample's pipeline."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from kit.errors import KitError
from kit.synth import PRESETS


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark kit against the course sample's pipeline")
    p.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="synthetic competition to measure on (default: demo for speed, hard for --accuracy)")
    p.add_argument("--data", default=None, help="measure on this data dir instead of a synthetic one")
    p.add_argument("--out", default=".", help="where bench.json and bench.md go (default: here)")
    p.add_argument("--cache", default="data", help="where the synthetic bench data is generated")
    p.add_argument("--quick", action="store_true", help="fewer steps and batches (a smoke run)")
    p.add_argument("--train-steps", type=int, default=None, help="training steps per timing")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the baseline")
    p.add_argument("--long", type=int, default=0, metavar="STEPS",
                   help="also run both training loops STEPS steps (e.g. 6000) and compare their speed in the "
                        "first and last tenth: catches a late slowdown such as CPU denormals")
    p.add_argument("--compile", dest="compile_too", action=argparse.BooleanOptionalAction, default=None,
                   help="also time training with torch.compile (default: on a GPU only; a CPU compiles for minutes)")
    p.add_argument("--accuracy", action="store_true",
                   help="accuracy instead of speed: run a recipe (default boss) on the hard preset, score its "
                        "members and ensemble with the answer key, and the course sample trained for the same "
                        "wall time; writes bench_accuracy.json/.md")
    p.add_argument("--suite", action="store_true",
                   help="with --accuracy: on each competition of the tuning suite (hard, tts, many; generated "
                        "once into --cache) and one table; writes bench_suite.json/.md")
    p.add_argument("--recipe", default="boss", help="with --accuracy: the recipe to measure (default boss)")
    p.add_argument("--minutes", type=float, default=None,
                   help="with --accuracy: wall-clock minutes for the whole recipe (default: its quick budget's)")
    p.add_argument("--member-minutes", type=float, default=None,
                   help="with --accuracy: training minutes per member instead (a longer budget)")
    p.add_argument("--no-course", action="store_true", help="with --accuracy: skip the course sample")
    p.add_argument("--audition", action=argparse.BooleanOptionalAction, default=None,
                   help="with --accuracy: the recipe's audition on or off (default: as the recipe says)")
    p.add_argument("--stages", nargs="?", const="pseudo,distill", default=None, metavar="lmft,pseudo,refit,distill",
                   help="with --accuracy: also run the recipe with some of its stages after the members "
                        "(large-margin fine-tuning, pseudo-labelling, the refit on train + validation, "
                        "distillation; default pseudo,distill) "
                        "on the finished members, and score them")
    p.add_argument("--stage-minutes", type=float, default=None,
                   help="with --stages: wall-clock minutes for that second run (default: the recipe's)")
    p.add_argument("--same-budget", action="store_true",
                   help="with --stages: run the recipe with its stages from scratch in the same minutes as "
                        "the plain run (members and stages share the time) instead of after it")
    p.set_defaults(func=cmd_bench)


def _check_numbers(args: argparse.Namespace) -> None:
    """Counts and minutes refused before anything is measured: a bench that ran for an hour on a
    negative --train-steps would end in a traceback."""
    positive = (("--train-steps", args.train_steps), ("--minutes", args.minutes),
                ("--member-minutes", args.member_minutes), ("--stage-minutes", args.stage_minutes))
    for flag, value in positive:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise KitError(f"{flag} {value}: must be a positive number")
    if args.minutes is not None and args.member_minutes is not None:
        raise KitError("--minutes and --member-minutes: give one (the recipe's minutes, or each member's)")
    for flag, value in (("--workers", args.workers), ("--long", args.long)):
        if value < 0:
            raise KitError(f"{flag} {value}: must be 0 or more")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise KitError(f"{out}: --out is a file; bench writes its results into a folder")


def cmd_bench(args: argparse.Namespace) -> int:
    log = lambda m: print(f"bench: {m}", file=sys.stderr, flush=True)        # noqa: E731
    _check_numbers(args)
    if args.accuracy and args.suite:
        # deferred: brings torch; `kit --help` imports only the parsers
        from kit.bench_suite import SUITE, run_suite, suite_markdown

        for given, flag in ((args.data, "--data"), (args.stages, "--stages"), (args.same_budget, "--same-budget")):
            if given:
                raise KitError(f"{flag} goes without --suite: the suite runs the recipe on its own "
                               f"competitions ({', '.join(SUITE)}), plainly")
        presets = (args.preset,) if args.preset else SUITE
        suite = run_suite(args.recipe, presets, args.minutes, args.out, args.cache, log=log,
                          course=not args.no_course, audition=args.audition,
                          per_member_minutes=args.member_minutes)
        print(suite_markdown(args.recipe, suite["rows"]))
        return 0
    if args.suite:
        raise KitError("--suite goes with --accuracy (kit bench --accuracy --suite)")
    if args.accuracy:
        # deferred: brings torch; `kit --help` imports only the parsers
        from kit.bench_accuracy import accuracy_markdown, run_accuracy_bench

        result = run_accuracy_bench(args.recipe, args.preset or "hard", args.data, args.minutes,
                                    args.member_minutes, args.out, cache=args.cache, course=not args.no_course,
                                    stages=args.stages, stage_minutes=args.stage_minutes,
                                    same_budget=args.same_budget, log=log, audition=args.audition)
        print(accuracy_markdown(result))
        return 0
    # deferred: brings torch; `kit --help` imports only the parsers
    from kit.bench import run_bench, to_markdown

    result = run_bench(args.preset or "demo", args.data, args.out, args.quick, args.train_steps, args.workers,
                       args.cache, args.long, args.compile_too,
                       log=lambda m: print(f"bench: {m}", file=sys.stderr, flush=True))
    print(to_markdown(result))
    return 0
