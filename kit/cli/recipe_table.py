"""The table `kit recipe run` prints on stdout: members, the audition, pseudo-label rounds, the vote, its
report, the student and the submission (kit.recipe_result.RecipeResult)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:        # kit.recipe_result brings torch: `kit --help` would take seconds
    from kit.recipe_result import RecipeResult


def _print_rounds(result: RecipeResult) -> None:
    v0 = result.vote0
    if v0 is not None:
        oof = f"  (out-of-fold {v0.val_acc_oof:.4f})" if v0.val_acc_oof is not None else ""
        print(f"vote before pseudo-labelling val acc: {v0.val_acc:.4f}{oof}   csv: {v0.csv}")
    for r in result.rounds:
        est = "-" if r.estimated_precision is None else f"{r.estimated_precision:.3f}"
        print(f"pseudo-label round {r.round}: {r.count} test utterances, confidence >= {r.threshold:.3f}, "
              f"estimated precision {est}; fine-tuned: {', '.join(Path(d).name for d in r.fine_tuned) or 'none'}"
              + "".join(f"; diverged, its source voted instead: {Path(d).name} at step {v['step']}"
                        for d, v in r.diverged.items()))


def print_recipe_table(result: RecipeResult) -> None:
    """The recipe's result as the table on stdout: members, rounds, the vote, its report, the submission.
    val acc: the prediction's accuracy on validation (ids.json), or training's centre crops, marked."""
    print(f"recipe {result.recipe}  budget {result.budget}  data {result.data}")
    print(f"{'member':<22} {'params':>9} {'val acc':>8} {'mode':>8} {'steps':>7} {'minutes':>8}  note")
    for m in result.members:
        print(f"{m.name:<22} {m.params:>9,} {m.accuracy_text():>8} {m.mode:>8} {m.step:>7} {m.minutes:>8.1f}  {m.note}")
    if result.audition is not None:
        print("\n".join(result.audition.lines()))
    _print_rounds(result)
    ens = result.ensemble
    if ens is not None:
        if ens.weights:
            picked = ", ".join(f"{Path(d).name} {w:.2f}" for d, w in zip(ens.members, ens.weights, strict=True)
                              if w > 0)
            print(f"weights (fitted on validation): {picked}")
        honest = f"  (out-of-fold {ens.val_acc_oof:.4f})" if ens.val_acc_oof is not None else ""
        print(f"ensemble ({ens.method or ens.vote}) val acc: {ens.val_acc:.4f}{honest}   csv: {ens.csv}")
    if result.report:
        print(result.report.rstrip())
    st = result.student
    if st is not None and st.diverged_at is not None:
        print(f"distilled student: diverged at step {st.diverged_at} (no student CSV)")
    elif st is not None:
        acc = "- (it trained on validation too)" if st.val_acc is None else f"{st.val_acc:.4f}"
        print(f"distilled student val acc: {acc}   csv: {st.csv}")
    if result.submission and ens is not None:         # only a vote is submitted
        _print_submission(ens.csv, result.submission)
    if st is not None and st.csv and st.submission:     # and the student, when [after.distill] submit says so
        _print_submission(st.csv, st.submission)
    if result.resume:
        print(f"to continue: {result.resume}")
    print(f"wall time: {result.minutes:.1f} min")


def _print_submission(csv, sub: dict) -> None:
    print(f"submission: {csv}  {sub.get('status')} on {sub.get('target') or '-'}  "
          f"public {sub.get('public') or '-'}  private {sub.get('private') or '-'}")
    if sub.get("reason"):
        print(f"submission note: {sub['reason']}")
