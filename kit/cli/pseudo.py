"""`kit pseudo` (pseudo-labels for the test set from an ensemble) and `kit distill` (one student
trained on the ensemble's soft targets); argument parsing and printing only."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from kit.cli import add_cache_option, cache_from, progress_wanted
from kit.errors import KitError
from kit.names import distinct_runs, same_dir
from kit.records import PredictionIds
from kit.runs import check_out, check_resume_target, move_aside, old_name, warn_in_sample
from kit.submission import read_answer_key, score_predictions


def register(sub) -> None:
    p = sub.add_parser("pseudo", help="pseudo-label confident test utterances from predicted run dirs",
                       description="The calibrated ensemble of RUNS labels the test utterances it is confident "
                       "about: the threshold is the lowest confidence at which validation utterances (out-of-fold) "
                       "are still right at --precision. Writes OUT/pseudo.csv (Id,Category,Confidence), "
                       "OUT/teacher.npz and OUT/pseudo.json. Train on them with "
                       "`kit train --set data.pseudo_labels=OUT/pseudo.csv --set train.init_from=RUN ...`.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="predicted run dirs (kit predict)")
    p.add_argument("--out", required=True, help="dir for pseudo.csv, teacher.npz, pseudo.json")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--precision", type=float, default=0.95,
                   help="validation-estimated precision the chosen labels must reach (default 0.95)")
    g.add_argument("--top-fraction", type=float, help="instead: label this share of the test set")
    p.add_argument("--answers", help="answer key (synthetic data): also print the labels' true precision")
    add_cache_option(p)
    p.set_defaults(func=cmd_pseudo)

    d = sub.add_parser("distill", help="train one student on an ensemble's soft targets",
                       description="The student (the best member's model unless --config) trains on the training "
                       "labels plus the calibrated ensemble's probabilities on every test utterance, starting "
                       "from the best member's weights (--init best) or from scratch (--init none); then it is "
                       "predicted like any run dir.")
    d.add_argument("runs", nargs="+", metavar="RUN", help="predicted run dirs (the teachers)")
    d.add_argument("--out", required=True, help="the student's run dir")
    d.add_argument("--config", help="the student's member TOML (default: the best member's config)")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    d.add_argument("--minutes", type=float, help="the student's time budget (train.minutes)")
    d.add_argument("--temperature", type=float, default=1.0, help="soften (>1) or sharpen (<1) the teacher")
    d.add_argument("--distill-weight", type=float, default=0.5,
                   help="soft-target weight where a row also has a (pseudo-)label (default 0.5)")
    d.add_argument("--pseudo", metavar="CSV", help="also train on these pseudo-labels (kit pseudo's pseudo.csv)")
    d.add_argument("--allow-external-labels", action="store_true",
                   help="train on a --pseudo CSV that `kit pseudo` did not write (no pseudo.json beside it)")
    d.add_argument("--init", default="best", choices=("best", "none"), help="start from the best member's weights")
    d.add_argument("--resume", action="store_true", help="continue an interrupted student")
    d.add_argument("--fresh", action="store_true", help="start over: move an existing STUDENT dir aside to "
                   "STUDENT.old-<time> first (nothing is deleted)")
    d.add_argument("--no-progress", action="store_true")
    add_cache_option(d)
    d.set_defaults(func=cmd_distill)


def cmd_pseudo(args: argparse.Namespace) -> int:
    # deferred: brings pandas; `kit --help` imports only the parsers
    from kit.pseudo import PSEUDO_CSV, PSEUDO_JSON, TEACHER, make_pseudo_labels, true_precision

    distinct_runs(args.runs)
    _check_pseudo_out(Path(args.out), (PSEUDO_CSV, PSEUDO_JSON, TEACHER))
    key = read_answer_key(args.answers) if args.answers else None       # a bad key fails before the work
    if key is not None:                     # and so does a key for another test set (probe 41: after it)
        _key_fits(args.runs[0], key, args.answers)
    _keep_earlier_round(Path(args.out), PSEUDO_JSON)            # last: a refused command moves nothing
    rec = make_pseudo_labels(args.runs, args.out, precision=args.precision, top_fraction=args.top_fraction)
    print(f"pseudo-labels: {rec.describe()}")
    if args.answers:
        true = true_precision(rec.csv, key)
        print(f"true precision (answer key): {'-' if true is None else f'{true:.4f}'}")
    print(f"csv: {rec.csv}")
    return 0


def _check_pseudo_out(out: Path, ours: tuple[str, ...]) -> None:
    """--out is new, empty, or an earlier `kit pseudo`'s (its files are replaced); never a folder of
    the user's files nor a run dir, whose files kit would overwrite without a copy."""
    if not out.exists():
        return
    if not out.is_dir():
        raise KitError(f"{out}: exists and is not a directory")
    theirs = sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith("."))
    if not theirs and (out / ours[0]).exists() and not (out / ours[1]).is_file():
        theirs = [ours[0]]          # a pseudo.csv that no pseudo.json beside it says kit wrote
    if theirs:
        raise KitError(f"--out {out}: holds files `kit pseudo` did not write ({', '.join(theirs[:3])}); it would "
                       "write its own over them: choose a new or empty folder")


def _key_fits(run: str, key: dict, answers: str) -> None:
    """KitError when the answer key is not of the test set `run` predicted (as `kit score` refuses it)."""
    ids = PredictionIds.load(run).test
    score_predictions(dict.fromkeys(ids, ""), key, f"{run}/ids.json (the test set it labels)", str(answers))


def _keep_earlier_round(out: Path, record: str) -> None:
    """An earlier round in --out is moved aside to OUT.old-<time>, not written over (probe 41: a run
    fine-tuned on it then resumed on the new labels without a word; now its resume is refused, and
    its labels are still there)."""
    if (out / record).is_file():
        moved = old_name(out)
        os.rename(out, moved)
        print(f"kit: --out {out} held an earlier round of pseudo-labels: moved to {moved} (a run made from it "
              "refuses to resume on the new one)", file=sys.stderr, flush=True)


def cmd_distill(args: argparse.Namespace) -> int:
    # deferred: brings torch; `kit --help` imports only the parsers
    from kit.distill import distill

    def log(message: str) -> None:
        print(f"kit: {message}", file=sys.stderr, flush=True)

    if args.fresh and args.resume:
        raise KitError("--fresh and --resume: choose one (start over, or continue)")
    if args.minutes is not None and not args.minutes > 0:
        raise KitError(f"--minutes {args.minutes:g}: the student's time budget, in minutes above 0")
    if not (math.isfinite(args.temperature) and args.temperature > 0):    # probe 49 F6: refused after --out was
        raise KitError(f"--temperature {args.temperature:g}: must be a number above 0")       # made, left empty
    if not 0 <= args.distill_weight <= 1:
        raise KitError(f"--distill-weight {args.distill_weight:g}: must be between 0 and 1")
    if any(same_dir(args.out, run) for run in distinct_runs(args.runs)):
        raise KitError(f"--out {args.out}: is one of the teachers; give the student a run dir of its own")
    check_out(args.out)         # a folder of the user's files: refused before teacher.npz is written into it
    if args.resume:
        check_resume_target(args.out, log)
    warn_in_sample(args.runs, log)
    if args.fresh and Path(args.out).exists():
        log(f"{args.out}: starting over; the old student moved to {move_aside(args.out, old_name(args.out))}")
    with cache_from(args):
        result = distill(args.runs, args.out, args.config, args.overrides, args.minutes, args.temperature,
                         args.distill_weight, args.pseudo, args.init, args.resume,
                         not args.no_progress and progress_wanted(), log, args.allow_external_labels)
    pred = result["pred"]
    print(json.dumps({"run_dir": result["run_dir"], "val_acc": pred.get("val_acc"), "mode": pred.get("mode"),
                      "steps": result["summary"].get("step"), "teacher_vote": result["teacher"]["method"]}, indent=2))
    return 0
