"""`kit predict | ensemble | report | validate | score`: windows → probabilities → votes → checked CSV.

Argument parsing and printing only; the work is in kit.infer, kit.ensemble, kit.report, kit.submission.
"""
from __future__ import annotations

import argparse
import json
import sys

from kit.cli import add_cache_option, log_line, progress_wanted
from kit.config import CHECKPOINTS
from kit.errors import KitError
from kit.names import distinct_runs
from kit.records import predicted_which
from kit.runs import warn_in_sample
from kit.submission import score_submission, validate_submission


def register(sub) -> None:
    _register_predict(sub)
    _register_ensemble(sub)
    _register_checks(sub)


def _register_predict(sub) -> None:
    p = sub.add_parser("predict", help="sliding-window prediction of a run's validation and test sets")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run dir(s) (hold config.toml and checkpoints)")
    p.add_argument("--window", type=int, default=None, help="frames per window (default: the run's infer.window)")
    p.add_argument("--hop", type=int, default=None,
                   help="frames between window starts (default: infer.hop, at most the window)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--full", action=argparse.BooleanOptionalAction, default=None,
                     help="one window = the whole utterance (default: infer.full)")
    how.add_argument("--mode", choices=["sliding", "full", "auto"], default=None,
                     help="test inference: sliding windows, the whole utterance, or auto = whichever of "
                          "the two has the lower validation NLL after temperature scaling, per run "
                          "(default: infer.mode if the config has it, else infer.full)")
    p.add_argument("--average", choices=["logits", "probs"], default=None,
                   help="average window probabilities, or logits then softmax (default: infer.average)")
    p.add_argument("--which", choices=CHECKPOINTS, default=None,
                   help="checkpoint to use (default: the one the run was last predicted from, e.g. a recipe's "
                        "[after] which; best for a run not predicted yet)")
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="with --mode full or sliding: predict validation in that mode only (faster)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per batch (default: infer.batch_size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_cache_option(p)
    p.set_defaults(func=cmd_predict)


def _register_ensemble(sub) -> None:
    p = sub.add_parser("ensemble",
                       help="calibrated auto, hard or soft vote over predicted runs -> submissions/NAME.csv",
                       description="Vote over predicted runs. With --weights auto (or --vote auto) each member "
                                   "is temperature-scaled on validation and the combination is chosen by "
                                   "out-of-fold (cross-fitted) validation accuracy, then refitted on all of "
                                   "validation: --vote auto picks among the best single member, a hard vote, "
                                   "an equal and an NLL-weighted calibrated soft vote; --vote soft among the "
                                   "single member and the soft votes; --vote hard between the single member "
                                   "and the hard vote.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run dirs already predicted with `kit predict`")
    p.add_argument("--vote", choices=["hard", "soft", "auto"], default="hard",
                   help="hard | soft | auto (auto = --weights auto over every method; default: hard)")
    p.add_argument("--weights", default=None,
                   help="'auto' (calibrated, cross-fitted choice on validation, see above) or W1,W2,... "
                        "(default: equal)")
    p.add_argument("--pool", choices=["geo", "mean"], default=None,
                   help="calibrated soft vote of --weights auto: geo = weighted mean of log-probabilities, "
                        "mean = of probabilities (default: geo)")
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds of --weights auto (default: 5)")
    p.add_argument("--name", default=None,
                   help="submission name, without .csv: writes OUT/NAME.csv and OUT/NAME.json "
                        "(default: <vote>-<n>members-<time>)")
    p.add_argument("--out", default="submissions", help="folder for NAME.csv and NAME.json")
    add_cache_option(p)         # the data is packed again to compare when a feature file changed since prediction
    p.set_defaults(func=cmd_ensemble)


def _register_checks(sub) -> None:
    p = sub.add_parser("report", help="member vs ensemble accuracy, oracle, disagreement (+ PNG)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run dirs already predicted with `kit predict`")
    p.add_argument("--ensemble", default=None, metavar="NAME.json",
                   help="manifest written by `kit ensemble` (default: compute the calibrated cross-fitted "
                        "ensemble on validation, writing nothing)")
    p.add_argument("--png", default=None, help="picture to write (default: NAME_report.png beside the "
                                               "ensemble's CSV when --ensemble is given, else none)")
    p.add_argument("--answers", default=None, metavar="KEY.csv",
                   help="answer key Id,Category,Usage: add public/private test accuracy")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_cache_option(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("validate", help="check a submission CSV the way Kaggle would")
    p.add_argument("csv", metavar="SUB.csv")
    p.add_argument("--data", required=True, help="competition data dir (testdata.json, mapping.json)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("score", help="score a submission against an answer key (synthetic data)")
    p.add_argument("csv", metavar="SUB.csv")
    p.add_argument("--answers", required=True, help="answer key CSV: Id,Category,Usage")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_score)


def _invalid_for_its_data(csv, answers) -> list[str]:
    """What `kit validate` says of a scored CSV, against the data dir whose answer key `answers` is (a
    synthetic competition's DATA_answers.csv beside DATA), so a file Kaggle would refuse is not scored
    without a word (probe 40: an empty or unknown Category counted only as a wrong answer); [] when
    it is valid, or no such data dir is beside the key."""
    # deferred: kit.synth brings numpy and the synthesizers; `kit --help` imports only the parsers
    from kit.synth import data_dir_of

    data = data_dir_of(answers)
    if data is None or not (data / "metadata.json").is_file():
        return []
    try:
        problems = validate_submission(csv, data)
    except KitError:                        # a damaged data dir beside the key: scoring goes on as before
        return []
    return [f"{csv} would not pass `kit validate {csv} --data {data}` (nor Kaggle): {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")] if problems else []


def _pct(x) -> str:
    return "    -" if x is None or x != x else f"{100 * x:5.1f}%"


def _no_nan(value):
    """The score's NaN (a key with no Public or no Private rows) as null: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def cmd_predict(args: argparse.Namespace) -> int:
    # deferred: brings torch; `kit --help` imports only the parsers
    from kit.infer import predict_run
    from kit.rundir import warn_not_done

    progress = not args.no_progress and progress_wanted()
    warn_not_done(args.runs, log_line, "predicted")
    for n, run in enumerate(args.runs):
        r = predict_run(run, window=args.window, hop=args.hop, full=args.full, average=args.average,
                        # no --which: the one it was last predicted from, as kit's refusals advise (a recipe's: last)
                        which=args.which or predicted_which(run), batch_size=args.batch_size, progress=progress,
                        mode=args.mode, compare=args.compare)
        if n == 0:             # after the first run, so an early error is the only output
            print(f"{'run':<40} {'centre':>7} {'full':>8} {'sliding':>8}  {'val':>5} {'test':>5} {'test s':>7}")
        mark = {m: "*" if m == r["mode"] else " " for m in ("full", "sliding")}
        print(f"{run:<40} {_pct(r['val_acc_centre']):>7} {_pct(r['val_acc_full']):>7}{mark['full']} "
              f"{_pct(r['val_acc_sliding']):>7}{mark['sliding']}  {r['n_val']:>5} {r['n_test']:>5} "
              f"{r['test_seconds']:>7.1f}")
        chosen = "full" if r["mode"] == "full" else f"sliding (window {r['window']}, hop {r['hop']})"
        if r["mode_requested"] == "auto":
            chosen += " chosen on validation"
            if not args.compare:                    # said, not silently ignored (probe 40)
                print(f"kit: warning: {run}: --no-compare ignored: its mode is auto, which compares full and "
                      "sliding on validation; give --mode full or sliding to predict validation one way",
                      file=sys.stderr)
        print(f"{run}: wrote val_probs.npy, test_probs.npy, ids.json ({chosen}, {r['average']} averaged, "
              f"{r['which']} checkpoint)", file=sys.stderr)
    print("val accuracy of centre-crop, full-length and sliding-window inference; * = saved")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    # deferred: brings pandas; `kit --help` imports only the parsers
    from kit.ensemble import DEFAULT_POOL, ensemble_runs, parse_weights, require_folds
    from kit.rundir import warn_not_done

    require_folds(args.folds)     # refused whatever the vote, as any bad argument is
    warn_in_sample(args.runs, log_line)
    warn_not_done(args.runs, log_line)
    r = ensemble_runs(args.runs, vote=args.vote, weights=parse_weights(args.weights), name=args.name,
                      out_dir=args.out, pool=args.pool or DEFAULT_POOL, folds=args.folds, log=log_line)
    width = max(len(row["member"]) for row in r["table"])
    auto = "method" in r
    print(f"{'member':<{width}} {'weight':>7} {'val acc':>8}" + (f" {'T':>6} {'oof acc':>8}" if auto else ""))
    for row in r["table"]:
        line = f"{row['member']:<{width}} {row['weight']:>7.3f} {_pct(row['val_acc']):>8}"
        if auto:
            t = f"{row['temperature']:.2f}" if "temperature" in row else ""
            line += f" {t:>6} {_pct(row.get('oof_acc')) if 'oof_acc' in row else '':>8}"
        print(line)
    if auto:
        print("out-of-fold val acc of each method: " + "  ".join(
            f"{m} {_pct(c['oof_acc'])}" for m, c in r["candidates"].items()) + f"  -> {r['method']}")
    print(f"wrote {r['csv']} and {r['manifest']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    # deferred: brings pandas; `kit --help` imports only the parsers
    from kit.report import format_report, report_runs
    from kit.rundir import warn_not_done

    warn_in_sample(args.runs, log_line)
    warn_not_done(distinct_runs(args.runs), log_line, "reported")
    r = report_runs(distinct_runs(args.runs), ensemble_result=args.ensemble, png=args.png, answers=args.answers)
    print(json.dumps(r, indent=2) if args.json else format_report(r))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    problems = validate_submission(args.csv, args.data)
    for line in problems:
        print(f"kit: error: {line}", file=sys.stderr)
    if problems:
        return 2
    print(f"ok: {args.csv} is a valid submission for {args.data}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    r = score_submission(args.csv, args.answers)
    for line in _invalid_for_its_data(args.csv, args.answers):
        print(f"kit: warning: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(_no_nan(r), indent=2))
        return 0
    print(f"{'split':<8} {'acc':>7} {'95% CI (Wilson)':>17} {'correct':>9}")
    for name in ("public", "private", "overall"):
        s = r[name]
        print(f"{name:<8} {_pct(s['acc']):>7}   [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}] "
              f"{s['correct']:>5}/{s['n']}")
    gap = r["gap"]
    print(f"gap public - private: {'-' if gap != gap else f'{100 * gap:+.1f} points'}")
    return 0
